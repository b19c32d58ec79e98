"""Capabilities: one module per kind of job, registered here by command type.

A handler is ``handler(job, command, runtime)`` and returns a result dict, or a
``(finish_reason, result)`` pair when the job can end other than ``done``.

Jobs run on the core's one model-worker thread, in order, unless their command type is in
``IO_LANE``: those never touch the resident model (downloads, file listings, network checks) and
each runs on its own thread, so a long download never holds up a chat. ``beside_the_model``
also lets a chat through that goes only to a cloud provider or remote server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import protocol as p

HANDLERS: dict[type, Callable[..., Any]] = {}
IO_LANE: set[type] = set()
# Jobs that never use transformers; every other job has it imported first (``needs_transformers``).
WITHOUT_TRANSFORMERS: set[type] = set()


def register(command_type: type, handler: Callable[..., Any]) -> None:
    HANDLERS[command_type] = handler


def beside_the_model(command: Any) -> bool:
    """Whether a job runs on its own thread rather than in the model worker's queue."""
    if type(command) in IO_LANE:
        return True
    if isinstance(command, p.Chat):
        from engine.routing import plan_route

        try:
            plan = plan_route(command)
        except Exception:  # the job itself reports the contradiction, in the queue
            return False
        # Only the cloud or a remote server answers: a local generation need not finish first.
        return plan.first.provider != "local" and plan.fallback is None
    return False


def needs_transformers(command: Any) -> bool:
    """Whether a job may use transformers, whose first import must not run on two threads at
    once (its lazy module then fails with "cannot import name 'AutoConfig'")."""
    if type(command) in WITHOUT_TRANSFORMERS:
        return False
    return not (isinstance(command, p.Chat) and beside_the_model(command))  # cloud only


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
    from engine.capabilities.search import register_search

    register_search(register)  # index folders, query, status, tags, thumbnails
    from engine.capabilities.finetune import FINETUNE_JOBS, register_finetune

    register_finetune(register)  # datasets, plans, training (in its own process), adapters
    IO_LANE.update(FINETUNE_JOBS)  # they run in child processes, never on the resident model

    # Cloud checks, documents (rendering has its own process and lock; schemas and exports are
    # pure) and reading the search index (SQLite in WAL mode): none of them uses transformers.
    light = {
        p.cloud.TestConnection,
        p.cloud.ListProviderModels,
        p.extract.InspectDocument,
        p.extract.RenderPages,
        p.extract.ListSchemas,
        p.extract.CheckSchema,
        p.extract.ExportResults,
        p.search.SearchStatus,
        p.search.GetThumbnails,
    }
    IO_LANE.update(
        light,
        {
            p.models.DownloadModel,
            p.models.ListInstalled,
            p.models.DeleteModel,
            p.models.ImportFolder,
            p.models.PlanMemory,
            # A query never waits behind an index run: it shares the run's resident embedder
            # (models.embedder leases).
            p.search.SearchQuery,
        },
    )
    WITHOUT_TRANSFORMERS.update(
        light,
        {
            p.finetune.ListFinetuneRuns,
            p.finetune.PauseFinetune,
            p.finetune.StopFinetune,
            p.finetune.InspectDataset,
        },
    )


_register_builtin()
