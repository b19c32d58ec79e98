"""Streaming pieces for ``generate``: incremental detokenisation and a cancel check per step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer


class IncrementalStreamer(BaseStreamer):
    """Turns generated token ids into text deltas without re-decoding the whole answer.

    Decodes only a short window (prefix offset → end) per token, the technique of TGI and vLLM,
    and holds back text that ends in an incomplete UTF-8 sequence.
    """

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        self._tokenizer = tokenizer
        self._on_text = on_text
        self._prompt_seen = False
        self.token_ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.emitted = ""
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt
            self._prompt_seen = True
            return
        self.add(value.reshape(-1).tolist())

    def add(self, ids: list[int]) -> None:
        """New token ids, as plain ints (the engine's own decode loop hands them over so)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.token_ids.extend(ids)
        self._step()

    def end(self) -> None:
        pass

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def _step(self) -> None:
        prefix = self._decode(self.token_ids[self._prefix_offset : self._read_offset])
        text = self._decode(self.token_ids[self._prefix_offset :])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            piece = text[len(prefix) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.token_ids)
            self.emitted += piece
            self._on_text(piece)

    def finish(self, full_text: str) -> str:
        """Emit whatever the window held back, so the deltas add up to ``full_text``."""
        if full_text.startswith(self.emitted) and len(full_text) > len(self.emitted):
            rest = full_text[len(self.emitted) :]
            self.emitted = full_text
            self._on_text(rest)
        return full_text


class CancelCriteria(StoppingCriteria):
    """Stops generation between tokens once the job is cancelled."""

    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self._cancelled = cancelled
        self.triggered = False

    def should_stop(self) -> bool:
        """The same check without tensors (no device work per token)."""
        self.triggered = self.triggered or self._cancelled()
        return self.triggered

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stop = self._cancelled()
        self.triggered = self.triggered or stop
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
