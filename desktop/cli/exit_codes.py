"""Exit codes of the command line, and how engine error codes map onto them."""

from __future__ import annotations

from engine.protocol import MODEL_ERROR_CODES, ErrorCode
from engine.protocol.cloud import CLOUD_ERROR_CODES, CONSENT_NEEDED

OK = 0
FAILED = 1
USAGE = 2
BAD_INPUT = 3
MODEL_PROBLEM = 4
CLOUD_FAILURE = 5  # a cloud or remote backend failed, or the policy kept the request local
INTERRUPTED = 130


def for_error(code: str | None) -> int:
    if code == ErrorCode.BAD_INPUT:
        return BAD_INPUT
    if code in MODEL_ERROR_CODES or code == ErrorCode.NO_MODEL_LOADED:
        return MODEL_PROBLEM
    if code in CLOUD_ERROR_CODES:
        return CLOUD_FAILURE
    return FAILED


def explained(code: str | None, message: str) -> str:
    """An engine's error sentence, with what to do on the command line where it differs from
    the app (a command cannot stop to ask)."""
    if code == CONSENT_NEEDED:
        return f"{message} A command cannot ask: --policy local_then_cloud sends it."
    if code == ErrorCode.MODEL_UNSAFE:
        flag = "--trust-remote-code" if "trust_remote_code" in message else "--allow-pickle"
        return f"{message} On the command line: {flag}."
    return message
