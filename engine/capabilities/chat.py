"""Chat: the assistant's next turn for a conversation with images, streamed as deltas."""

from __future__ import annotations

from typing import Any

from engine import protocol as p
from engine.backends.cloud_common import CloudBackend, check_pdf
from engine.core import Job
from engine.documents.images import load_image
from engine.routing import plan_route, provenance, run_routed
from engine.runtime import LoadSpec, Runtime


def run_chat(job: Job, command: p.Chat, runtime: Runtime) -> tuple[p.FinishReason, dict[str, Any]]:
    plan = plan_route(command)  # a policy contradiction fails at once, before any load
    # Check every image before a possibly long model load, so a bad file fails at once.
    for message in command.messages:
        for path in message.images:
            if plan.may_send and path.lower().endswith(".pdf"):
                check_pdf(path)  # cloud backends take PDFs (as page images)
            else:
                load_image(path)
    return run_routed(
        job,
        command,
        runtime,
        plan=plan,
        local=lambda why: _chat_local(job, command, runtime, why),
        cloud=lambda backend, why: _chat_cloud(job, command, backend, why),
    )


def _chat_local(
    job: Job, command: p.Chat, runtime: Runtime, why: str
) -> tuple[p.FinishReason, dict[str, Any]]:
    if command.model:
        backend = runtime.ensure_loaded(
            LoadSpec.from_command(command), lambda message: job.progress("loading", message=message)
        )
    else:
        backend = runtime.require_backend()
    if job.cancelled:
        return "cancelled", {"text": ""}
    runtime.busy(True)
    try:
        generation = backend.chat(
            command.messages,
            command.sampling,
            on_text=job.delta,
            cancelled=lambda: job.cancelled,
            image_max_pixels=command.image_max_pixels,
        )
    finally:
        runtime.busy(False)
    result = generation.as_result(backend.name, backend.info(), token_ids=command.return_token_ids)
    result["why"] = why
    return generation.reason, result


def _chat_cloud(
    job: Job, command: p.Chat, backend: CloudBackend, why: str
) -> tuple[p.FinishReason, dict[str, Any]]:
    generation = backend.chat(
        command.messages, command.sampling, on_text=job.delta, cancelled=lambda: job.cancelled
    )
    result = generation.as_result(backend.name, backend.info(), token_ids=False)
    result.update(provenance(backend, why, generation))
    return generation.reason, result
