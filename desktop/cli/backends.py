"""``--backend``, ``--backend-model``, ``--policy`` and ``--never-send``, shared by the commands
that run a model (chat, extract): parsing them into the routing fields of a job command."""

from __future__ import annotations

import argparse
from typing import Any

from engine.protocol import cloud as c

BACKEND_HELP = (
    "who answers: local (default), anthropic, openai, gemini, or remote:URL for your own "
    "OpenAI-compatible server (vLLM, TGI, Ollama, LM Studio); keys come from the system "
    "keyring or ANTHROPIC_API_KEY / OPENAI_API_KEY / GEMINI_API_KEY"
)


class BackendChoiceError(ValueError):
    """A ``--backend``/``--policy`` combination that cannot work; the message says why."""


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default=None, metavar="NAME", help=BACKEND_HELP)
    parser.add_argument(
        "--backend-model", default=None, metavar="ID", help="the provider's model id"
    )
    parser.add_argument(
        "--policy",
        choices=c.POLICIES,
        default=None,
        help="routing policy (default: local_only, or the named --backend for this request)",
    )
    parser.add_argument(
        "--never-send",
        action="store_true",
        help="this input must never leave the machine, whatever the policy",
    )


def add_consent_arguments(parser: argparse.ArgumentParser) -> None:
    """Consent to what a model folder may run when it loads, for that model only."""
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load a model that has only pickle weights (they can run code: trust its source)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model's own Python code to load it (trust its source)",
    )


def backend_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The routing fields of a job command (``backend``, ``base_url``, …) from the arguments."""
    backend: str | None = args.backend
    base_url: str | None = None
    if backend is not None and backend.startswith(f"{c.REMOTE}:"):
        backend, base_url = c.REMOTE, backend.split(":", 1)[1]
        if not base_url:
            raise BackendChoiceError("--backend remote:URL needs the server's URL")
    if backend is not None and backend not in (c.LOCAL, *c.CLOUD_PROVIDERS, c.REMOTE):
        raise BackendChoiceError(
            f"unknown backend {backend!r}; choose local, anthropic, openai, gemini or remote:URL"
        )
    if backend == c.REMOTE and base_url is None:
        raise BackendChoiceError("--backend remote needs the server's URL: remote:URL")
    return {
        "backend": backend,
        "backend_model": args.backend_model,
        "base_url": base_url,
        "policy": args.policy,
        "never_send": bool(args.never_send),
    }


def requires_local_model(fields: dict[str, Any]) -> bool:
    """Whether only a local model can answer (so ``--model`` must name one)."""
    return fields.get("policy") in (None, c.LOCAL_ONLY) and fields.get("backend") in (None, c.LOCAL)
