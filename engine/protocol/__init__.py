"""The contract between the desktop (or CLI) and the engine process: typed, versioned JSON lines.

This package is the only engine code that ``desktop/`` imports. It depends on the standard
library and msgspec alone. Every message is a tagged struct: commands subclass ``Command``,
events subclass ``Event``; each direction is decoded as one tagged union of all subclasses, so a
capability adds messages by declaring them in its own module here. New fields go at the end of a
struct, with a default, so that an older peer still decodes newer messages. Images and documents
travel as file paths, never as bytes.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from engine.protocol import cloud, extract, finetune, models, search  # noqa: F401 - registers
from engine.protocol.base import *  # noqa: F403
from engine.protocol.base import Command, Event

DecodeError = msgspec.DecodeError


def _leaves(base: type) -> tuple[type, ...]:
    found: list[type] = []
    sub: type
    for sub in base.__subclasses__():
        found.append(sub)
        found.extend(_leaves(sub))
    return tuple(dict.fromkeys(found))


_encoder = msgspec.json.Encoder()
_command_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[_leaves(Command)])  # noqa: UP007
_event_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[_leaves(Event)])  # noqa: UP007


def encode(message: Command | Event) -> bytes:
    """One message as one line of JSON, newline included."""
    return _encoder.encode(message) + b"\n"


def decode_command(line: bytes | str) -> Command:
    """Raises ``DecodeError`` with a readable reason for anything that is not a known command."""
    command: Command = _command_decoder.decode(line)
    return command


def decode_event(line: bytes | str) -> Event:
    event: Event = _event_decoder.decode(line)
    return event


def to_builtins(message: Command | Event) -> dict[str, Any]:
    """A message as plain JSON-compatible data, tag included (used by ``--json`` output)."""
    data = msgspec.to_builtins(message)
    assert isinstance(data, dict)
    return data
