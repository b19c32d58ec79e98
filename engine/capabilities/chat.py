"""Chat: the assistant's next turn for a conversation with images, streamed as deltas."""

from __future__ import annotations

from typing import Any

from engine import protocol as p
from engine.core import Job
from engine.documents.images import load_image
from engine.runtime import LoadSpec, Runtime


def run_chat(job: Job, command: p.Chat, runtime: Runtime) -> tuple[p.FinishReason, dict[str, Any]]:
    # Check every image before a possibly long model load, so a bad file fails at once.
    for message in command.messages:
        for path in message.images:
            load_image(path)
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
            command.messages, command.sampling, on_text=job.delta, cancelled=lambda: job.cancelled
        )
    finally:
        runtime.busy(False)
    result = generation.as_result(backend.name, backend.info(), token_ids=command.return_token_ids)
    return generation.reason, result
