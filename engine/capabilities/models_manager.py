"""Model-manager jobs: plan memory, download, list, delete, import, embed; and the fit check
that runs before every load.

Each handler is small: the work lives in ``engine.models`` (planner, download, installed,
embedder); here it becomes a job with progress events, cancel and a result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from engine import protocol as p
from engine.core import Job
from engine.errors import BadInput
from engine.protocol import models as pm
from engine.runtime import Runtime

log = logging.getLogger(__name__)

Register = Callable[[type, Callable[..., Any]], None]


def register_models_manager(register: Register) -> None:
    register(pm.PlanMemory, run_plan)
    register(pm.DownloadModel, run_download)
    register(pm.ListInstalled, run_list)
    register(pm.DeleteModel, run_delete)
    register(pm.ImportFolder, run_import)
    register(pm.Embed, run_embed)


def run_plan(
    job: Job, command: pm.PlanMemory, runtime: Runtime
) -> dict[str, Any] | tuple[p.FinishReason, dict[str, Any]]:
    from engine.models.download import Cancelled
    from engine.models.planner import plan_memory

    if command.images < 0 or command.context_tokens < 0:
        raise BadInput("The number of images and the context must not be negative.")
    job.progress("planning", message=f"Planning {command.model}")
    try:
        plan = plan_memory(command, runtime.devices(), lambda: job.cancelled)
    except Cancelled:  # while its config files were being fetched
        return "cancelled", {"model": command.model}
    return {"plan": msgspec.to_builtins(plan)}


def run_download(
    job: Job, command: pm.DownloadModel, runtime: Runtime
) -> dict[str, Any] | tuple[p.FinishReason, dict[str, Any]]:
    from engine.models.download import Cancelled, describe_progress, download

    def emit(data: dict[str, Any]) -> None:
        job.progress("download", data["bytes_done"], data["bytes_total"], describe_progress(data))
        job.partial({"download": data})

    def say(message: str) -> None:  # what happens before the first byte
        job.progress("download", message=message)

    def warn(message: str) -> None:  # worth knowing, though the download goes on
        job.partial({"notice": message})

    try:
        return download(command, emit, lambda: job.cancelled, say, warn)
    except Cancelled:
        # Finished files stay in the cache: the same command later fetches only the rest.
        return "cancelled", {"repo_id": command.repo_id, "resumable": True}


def run_list(job: Job, command: pm.ListInstalled, runtime: Runtime) -> dict[str, Any]:
    from engine.models.installed import list_installed

    models = list_installed(command.folders, command.cache_dir)
    return {"models": [msgspec.to_builtins(model) for model in models]}


def run_delete(job: Job, command: pm.DeleteModel, runtime: Runtime) -> dict[str, Any]:
    from engine.finetune.runs import describe, list_runs
    from engine.finetune.trainer_process import training_runs
    from engine.models.embedder import unload_embedder
    from engine.models.installed import delete_model

    # Never delete files out from under a run training on them (this engine's, or another
    # process's in the runs folder): that one is stopped first.
    training = [describe(run) for run in training_runs()]
    if command.runs_dir:
        training += [run for run in list_runs(command.runs_dir) if run.state == "running"]
    for run in training:
        if _same_model(run.model, command.model):
            raise BadInput(
                f"{command.model} is being trained on (the run in {run.run_dir}); stop that run "
                "on the Fine-tune page, then delete the model."
            )
    # Nor from under the resident model: it is unloaded first, but never while it answers (its
    # weights would go from under the generation) or while a model loads (it may be this one).
    _refuse_while_in_use(runtime, command.model)
    spec = getattr(runtime, "spec", None)
    if spec is not None and _same_model(spec.model, command.model):
        runtime.unload()
    unload_embedder()
    return delete_model(command.model, command.cache_dir, command.managed_root)


def run_import(
    job: Job, command: pm.ImportFolder, runtime: Runtime
) -> dict[str, Any] | tuple[p.FinishReason, dict[str, Any]]:
    from engine.models.installed import import_folder

    last = [0.0]

    def progress(done: int, total: int, name: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or done >= total:
            last[0] = now
            job.progress("import", done, total, f"Copying {name}")

    result = import_folder(
        command.source, command.destination_root, command.name, progress, lambda: job.cancelled
    )
    if result is None:
        return "cancelled", {"source": command.source}
    return result


def run_embed(
    job: Job, command: pm.Embed, runtime: Runtime
) -> dict[str, Any] | tuple[p.FinishReason, dict[str, Any]]:
    from engine.documents.images import load_image
    from engine.models.embedder import EmbedSpec, lease_embedder

    if not command.images and not command.texts:
        raise BadInput("Give at least one image or one text to embed.")
    for path in command.images:  # a bad file fails at once, before a model load
        load_image(path)
    job.progress("loading", message=f"Loading {command.model}")
    spec = EmbedSpec(
        model=command.model,
        quant=command.quant,
        device=command.device,
        allow_pickle=command.allow_pickle,
        trust_remote_code=command.trust_remote_code,
    )
    cancelled = lambda: job.cancelled  # noqa: E731
    with lease_embedder(spec) as embedder:
        job.progress("embedding", 0, len(command.images) + len(command.texts))
        images = embedder.embed_images(command.images, cancelled) if command.images else []
        texts = embedder.embed_texts(command.texts, cancelled) if command.texts else []
    if images is None or texts is None:
        return "cancelled", {}
    return {
        "model": command.model,
        "dimension": len((images or texts)[0]),
        "image_embeddings": images,
        "text_embeddings": texts,
    }


def _refuse_while_in_use(runtime: Runtime, model: str) -> None:
    state = runtime.status([]).state
    spec = runtime.spec
    if state == "loading":
        raise BadInput(
            f"A model is loading right now, and it may be {model}: wait for it to load, "
            "then delete the model."
        )
    if state == "busy" and spec is not None and _same_model(spec.model, model):
        raise BadInput(
            f"{model} is answering right now (a chat answer or a document being read): stop it "
            "first, or wait for it to end, then delete the model."
        )


def _same_model(resident: str, requested: str) -> bool:
    if resident == requested:
        return True
    try:
        return Path(resident).expanduser().resolve() == Path(requested).expanduser().resolve()
    except OSError:
        return False
