"""Errors that end one job with a stable code and a sentence a person can act on."""

from __future__ import annotations

from typing import Any

from engine.protocol import ErrorCode


class EngineError(Exception):
    """A job failure the user can understand. The engine keeps serving after it."""

    code: str = ErrorCode.INTERNAL
    # What the failed job's ``Finished.result`` still says (who was answering, for a cloud
    # answer cut off halfway), or None.
    details: dict[str, Any] | None = None

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class BadInput(EngineError):
    code = ErrorCode.BAD_INPUT


class ModelNotFound(EngineError):
    code = ErrorCode.MODEL_NOT_FOUND


class ModelUnsafe(EngineError):
    code = ErrorCode.MODEL_UNSAFE


class Unsupported(EngineError):
    code = ErrorCode.UNSUPPORTED


class OutOfMemory(EngineError):
    code = ErrorCode.OUT_OF_MEMORY


class NoModelLoaded(EngineError):
    code = ErrorCode.NO_MODEL_LOADED


def classify(exc: BaseException) -> EngineError:
    """Turn any exception raised inside a job into an ``EngineError``.

    Out-of-memory errors from torch (CUDA or host) become ``out_of_memory`` with advice; anything
    unexpected is ``internal`` and keeps its type name so a bug report is useful.
    """
    if isinstance(exc, EngineError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    if (
        name == "OutOfMemoryError"
        or isinstance(exc, MemoryError)
        or "out of memory" in text.lower()
    ):
        return OutOfMemory(
            "The model ran out of memory. Try a smaller image, 4-bit quantisation (nf4), "
            "fewer images per message or a smaller model."
        )
    return EngineError(f"Internal error ({name}): {text}".strip(), ErrorCode.INTERNAL)
