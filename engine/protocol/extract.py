"""Messages of the extract capability (commands and events), added to the unions by the package."""

from __future__ import annotations

from engine.protocol.base import Command, Event  # noqa: F401
