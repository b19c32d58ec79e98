"""The one narrow interface every backend implements: describe yourself, chat, close."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from engine.protocol import ChatMessage, ModelInfo, Sampling

TextSink = Callable[[str], None]
CancelCheck = Callable[[], bool]


@dataclass
class GenerationResult:
    """What one generation produced, and how it ended."""

    text: str
    reason: Literal["done", "length", "cancelled"]
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token_s: float | None = None
    seconds: float = 0.0
    cached_tokens: int = 0  # prompt tokens reused from the previous turn's cache

    def as_result(self, backend: str, info: ModelInfo, *, token_ids: bool) -> dict[str, Any]:
        decode_s = self.seconds - (self.time_to_first_token_s or 0.0)
        result: dict[str, Any] = {
            "text": self.text,
            "backend": backend,
            "model": info.model,
            "quant": info.quant,
            "device": info.device,
            **({"adapter": info.adapter} if info.adapter else {}),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "time_to_first_token_s": self.time_to_first_token_s,
            "seconds": self.seconds,
            "tokens_per_s": (
                (self.completion_tokens - 1) / decode_s
                if self.completion_tokens > 1 and decode_s > 0
                else None
            ),
        }
        if token_ids:
            result["token_ids"] = self.token_ids
        return result


class Backend(Protocol):
    """A loaded model that can answer. Local and cloud backends implement all of it."""

    name: str

    def info(self) -> ModelInfo: ...

    def chat(
        self,
        messages: list[ChatMessage],
        sampling: Sampling,
        *,
        on_text: TextSink,
        cancelled: CancelCheck,
        json_schema: dict[str, Any] | None = None,
        image_max_pixels: int | None = None,
    ) -> GenerationResult:
        """Answer the conversation. With ``json_schema``, the answer is JSON conforming to it:
        constrained while decoding where the backend can, validated afterwards by the caller.
        ``image_max_pixels`` caps the pictures of models that read them at their own
        resolution (None: ``CHAT_IMAGE_MAX_PIXELS``); other backends scale as they must."""
        ...

    def close(self) -> None: ...
