"""Cloud jobs for Settings: test a provider's connection and list its models (no tokens spent)."""

from __future__ import annotations

import time
from typing import Any

from engine.core import Job
from engine.errors import BadInput
from engine.protocol import cloud as c
from engine.routing import Target, open_backend


def _backend(job: Job, provider: str, base_url: str | None) -> Any:
    if provider not in c.PROVIDERS:
        raise BadInput(f"Unknown provider {provider!r}; choose one of {', '.join(c.PROVIDERS)}.")
    # A placeholder model name: listing needs none, and the remote server's default would
    # otherwise cost a second listing.
    return open_backend(
        Target(provider, model="-", base_url=base_url),
        on_wait=lambda delay, error: job.progress(
            "waiting", message=f"{error.message} Retrying in {delay:.1f} s."
        ),
    )


def run_test_connection(job: Job, command: c.TestConnection, runtime: Any) -> dict[str, Any]:
    started = time.perf_counter()
    job.progress("connecting", message=f"Contacting {c.PROVIDER_LABELS.get(command.provider, '')}")
    backend = _backend(job, command.provider, command.base_url)
    try:
        models = backend.available_models(lambda: job.cancelled)
    finally:
        backend.close()
    return {
        "provider": command.provider,
        "ok": True,
        "models": len(models),
        "seconds": round(time.perf_counter() - started, 3),
    }


def run_list_models(job: Job, command: c.ListProviderModels, runtime: Any) -> dict[str, Any]:
    backend = _backend(job, command.provider, command.base_url)
    try:
        models = backend.available_models(lambda: job.cancelled)
    finally:
        backend.close()
    ids = [m["id"] for m in models]
    default = c.DEFAULT_MODELS.get(command.provider)
    if default not in ids:
        default = ids[0] if ids else default
    return {"provider": command.provider, "models": models, "default": default}
