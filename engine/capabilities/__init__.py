"""Capabilities: one module per kind of job, registered here by command type.

A handler is ``handler(job, command, runtime)`` and returns a result dict, or a
``(finish_reason, result)`` pair when the job can end other than ``done``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import protocol as p

HANDLERS: dict[type, Callable[..., Any]] = {}


def register(command_type: type, handler: Callable[..., Any]) -> None:
    HANDLERS[command_type] = handler


def _register_builtin() -> None:
    from engine.capabilities.chat import run_chat
    from engine.capabilities.models import run_load, run_unload

    register(p.Chat, run_chat)
    register(p.LoadModel, run_load)
    register(p.Unload, run_unload)
    from engine.capabilities.cloud import run_list_models, run_test_connection

    register(p.cloud.TestConnection, run_test_connection)
    register(p.cloud.ListProviderModels, run_list_models)
    from engine.capabilities.models_manager import register_models_manager

    register_models_manager(register)  # also wraps LoadModel with the memory-fit check
    from engine.capabilities.extract import register_handlers as register_extract

    register_extract(register)  # extraction, document inspection, schemas, exports


_register_builtin()
