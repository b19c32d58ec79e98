"""Which backend answers a request, and why: the routing policy, "never send", and the fallback.

A request (``Chat``, and any job command with the same optional fields) names a policy, a cloud
provider or remote server, and whether its content may leave the machine. ``plan_route`` turns
that into a plan without touching anything; ``run_routed`` runs it: the local model first where
the policy says so, and a cloud backend only when the policy allows it and a fallback trigger
fired (no usable GPU, model not installed, out of memory, local failure). A document marked
"never send" is never sent, whatever the policy. The reason travels with the result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.backends.base import GenerationResult
from engine.backends.cloud_common import CloudBackend, CloudError
from engine.errors import BadInput, EngineError, classify
from engine.protocol import ErrorCode
from engine.protocol import cloud as c

log = logging.getLogger(__name__)

R = TypeVar("R")

# Local failures that let the policy try the cloud; a bad file or a cancel never does.
FALLBACK_REASONS = {
    ErrorCode.OUT_OF_MEMORY: "the local model ran out of memory",
    ErrorCode.MODEL_NOT_FOUND: "the local model is not installed",
    ErrorCode.NO_MODEL_LOADED: "no local model is chosen",
    ErrorCode.UNSUPPORTED: "the local model cannot run on this machine",
    ErrorCode.MODEL_UNSAFE: "the local model needs your consent to load",
    ErrorCode.INTERNAL: "the local model failed",
}
NO_GPU = "no usable GPU"


@dataclass(frozen=True)
class Target:
    provider: str  # local | anthropic | openai | gemini | remote
    model: str | None = None
    base_url: str | None = None

    @property
    def label(self) -> str:
        return c.PROVIDER_LABELS.get(self.provider, self.provider)


LOCAL_TARGET = Target(c.LOCAL)


@dataclass(frozen=True)
class Plan:
    policy: str
    first: Target
    fallback: Target | None = None  # tried only when the local attempt fails with a trigger
    ask_first: bool = False  # "local, then ask": a fallback needs the user's yes
    why: str = ""

    @property
    def may_send(self) -> bool:
        """Whether anything in this request can leave the machine."""
        return self.first.provider != c.LOCAL or self.fallback is not None


def plan_route(request: Any) -> Plan:
    """The plan for a request's optional routing fields; contradictions fail with a reason."""
    backend = getattr(request, "backend", None) or None
    policy = getattr(request, "policy", None) or None
    never_send = bool(getattr(request, "never_send", False))
    base_url = getattr(request, "base_url", None) or None
    model = getattr(request, "backend_model", None) or None
    if backend is not None and backend not in (c.LOCAL, *c.PROVIDERS):
        raise BadInput(f"Unknown backend {backend!r}; choose local, {', '.join(c.PROVIDERS)}.")
    explicit = policy is None and backend not in (None, c.LOCAL)
    if policy is None:  # naming a provider for one request is that request's policy
        policy = {c.REMOTE: c.REMOTE_SERVER, None: c.LOCAL_ONLY, c.LOCAL: c.LOCAL_ONLY}.get(
            backend, c.CLOUD_ONLY
        )
    if policy not in c.POLICIES:
        raise BadInput(f"Unknown routing policy {policy!r}; choose one of {', '.join(c.POLICIES)}.")
    if policy == c.LOCAL_ONLY:
        if backend not in (None, c.LOCAL):
            raise EngineError(
                f"The policy is local only, so nothing is sent to "
                f"{c.PROVIDER_LABELS[backend]}. Choose another policy to use it.",
                ErrorCode.CLOUD_NOT_ALLOWED,
            )
        return Plan(policy, LOCAL_TARGET, why="local only")
    if policy == c.REMOTE_SERVER:
        backend = c.REMOTE
    if backend in (None, c.LOCAL):
        raise BadInput(
            f"The policy {c.POLICY_LABELS[policy].lower()} needs a cloud provider "
            f"({', '.join(c.PROVIDERS)})."
        )
    if backend == c.REMOTE and not base_url:
        raise BadInput("The remote server needs a URL, e.g. http://gpu-box:8000/v1.")
    remote = Target(backend, model, base_url)
    if never_send:
        if policy in (c.CLOUD_ONLY, c.REMOTE_SERVER):
            raise EngineError(
                "This is marked “never send”, so it stays on this machine and "
                f"{remote.label} was not asked. Use a local model for it.",
                ErrorCode.CLOUD_NOT_ALLOWED,
            )
        return Plan(policy, LOCAL_TARGET, why="marked never send: local only")
    if policy in (c.CLOUD_ONLY, c.REMOTE_SERVER):
        why = (
            "chosen for this request" if explicit else f"policy: {c.POLICY_LABELS[policy].lower()}"
        )
        return Plan(policy, remote, why=why)
    return Plan(
        policy,
        LOCAL_TARGET,
        fallback=remote,
        ask_first=policy == c.LOCAL_THEN_ASK,
        why="the local model answered",
    )


def run_routed(
    job: Any,
    request: Any,
    runtime: Any,
    *,
    local: Callable[[str], R],
    cloud: Callable[[CloudBackend, str], R],
    plan: Plan | None = None,
) -> R:
    """Answer with the planned backend: ``local(why)`` or ``cloud(backend, why)``."""
    plan = plan or plan_route(request)
    if plan.first.provider == c.LOCAL:
        if plan.fallback is None:
            return local(plan.why)  # local only: exactly the local path, errors and all
        reason = _no_gpu(request, runtime)
        if reason is None:
            try:
                return local(plan.why)
            except Exception as exc:
                error = classify(exc)
                reason = FALLBACK_REASONS.get(error.code)
                if reason is None or job.cancelled:
                    raise
                log.info(
                    "local attempt failed (%s); policy %s allows a fallback",
                    error.code,
                    plan.policy,
                )
        target = plan.fallback
        if plan.ask_first:
            job.partial(
                {
                    "consent_needed": {
                        "backend": target.provider,
                        "model": target.model,
                        "why": reason,
                    }
                }
            )
            raise CloudError(
                f"The local model could not answer ({reason}). Sending this to {target.label} "
                "needs your consent.",
                c.CONSENT_NEEDED,
            )
        why = reason
    else:
        target, why = plan.first, plan.why
    backend = open_backend(target, on_wait=_waiting(job))
    job.progress("routing", message=f"{backend.label} {backend.model} — {why}")
    try:
        return cloud(backend, why)
    except Exception as exc:
        # Text already streamed stays on screen: it says who wrote it even though it failed.
        error = classify(exc)
        error.details = {**(error.details or {}), "backend": backend.name, "model": backend.model}
        if error is exc:
            raise
        raise error from exc
    finally:
        backend.close()


def open_backend(
    target: Target, *, on_wait: Callable[[float, CloudError], None] | None = None
) -> CloudBackend:
    """A cloud or remote backend for ``target`` (reads its key now; raises if there is none)."""
    cls: type[CloudBackend]
    if target.provider == c.ANTHROPIC:
        from engine.backends.anthropic_backend import AnthropicBackend as cls
    elif target.provider == c.OPENAI:
        from engine.backends.openai_backend import OpenAIBackend as cls
    elif target.provider == c.GEMINI:
        from engine.backends.gemini_backend import GeminiBackend as cls
    elif target.provider == c.REMOTE:
        from engine.backends.openai_backend import RemoteBackend as cls
    else:
        raise BadInput(
            f"Unknown provider {target.provider!r}; choose one of {', '.join(c.PROVIDERS)}."
        )
    return cls(target.model, base_url=target.base_url, on_wait=on_wait)


def provenance(backend: CloudBackend, why: str, generation: GenerationResult) -> dict[str, Any]:
    """What a result records about who answered, why, and what it cost (tokens)."""
    return {
        "backend": backend.name,
        "model": backend.model,
        "why": why,
        "route": f"{backend.label} {backend.model} — {why}",
        "input_tokens": generation.prompt_tokens or None,
        "output_tokens": generation.completion_tokens or None,
    }


def _no_gpu(request: Any, runtime: Any) -> str | None:
    """ "No usable GPU" is a trigger unless the user chose the CPU or a model is already resident."""
    if getattr(request, "device", "auto") not in ("auto", "cuda"):
        return None
    model = getattr(request, "model", None)
    spec = getattr(runtime, "spec", None)
    if runtime.backend is not None and (model is None or (spec and spec.model == model)):
        return None
    if any(device.kind in ("cuda", "mps") for device in runtime.devices()):
        return None
    return NO_GPU


def _waiting(job: Any) -> Callable[[float, CloudError], None]:
    def on_wait(delay: float, error: CloudError) -> None:
        job.progress("waiting", message=f"{error.message} Retrying in {delay:.1f} s.")

    return on_wait
