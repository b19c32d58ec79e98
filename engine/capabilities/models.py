"""Loading and unloading the resident model as jobs."""

from __future__ import annotations

from typing import Any

import msgspec

from engine import protocol as p
from engine.core import Job
from engine.runtime import LoadSpec, Runtime


def run_load(job: Job, command: p.LoadModel, runtime: Runtime) -> dict[str, Any]:
    backend = runtime.ensure_loaded(
        LoadSpec.from_command(command), lambda message: job.progress("loading", message=message)
    )
    return {"model": msgspec.to_builtins(backend.info())}


def run_unload(job: Job, command: p.Unload, runtime: Runtime) -> dict[str, Any]:
    return {"unloaded": runtime.unload()}
