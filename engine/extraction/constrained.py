"""Schema-constrained decoding for local models: xgrammar grammars applied as a logits processor.

The grammar masks every token that would break the JSON Schema, so the answer always parses and
conforms (up to keywords xgrammar does not enforce; results are validated afterwards anyway).
Two guards bound what a grammar alone cannot: a string the schema leaves unbounded (a ``pattern``
or ``format``) is closed once it is long enough and closing is allowed, and a run of digits in a
number stops growing likewise. A processor holds the state of one answer: make one per call.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass
from typing import Any

import torch
import xgrammar as xgr
from transformers import LogitsProcessor

from engine.errors import Unsupported
from engine.extraction.bounds import MAX_WHITESPACE, WHITESPACE_KEY, guard_length

# A number may have this many digits in a row before the guard stops it (int64 needs 19).
MAX_DIGIT_RUN = 20


@dataclass
class _Vocabulary:
    """What the grammar needs to know about one tokenizer, built once and shared."""

    info: xgr.TokenizerInfo
    compiler: xgr.GrammarCompiler
    token_bytes: list[bytes]
    starts_with_quote: torch.Tensor  # bool per token id
    not_starting_with_digit: torch.Tensor
    # No raw control character before the token's first quote: inside a string one is invalid
    # JSON, yet xgrammar's bounded-string rule ([^"\\\r\n]{0,n}) lets tabs and the like through.
    safe_in_string: torch.Tensor


_cache: dict[tuple[int, int, tuple[int, ...]], tuple[Any, _Vocabulary]] = {}
_cache_lock = threading.Lock()


def _vocabulary(tokenizer: Any, vocab_size: int, stop_token_ids: tuple[int, ...]) -> _Vocabulary:
    key = (id(tokenizer), vocab_size, stop_token_ids)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] is tokenizer:
            return cached[1]
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids) or None
        )
        token_bytes = [bytes(token) for token in info.decoded_vocab]
        token_bytes += [b""] * (vocab_size - len(token_bytes))
        special = set(info.special_token_ids)
        quote = torch.tensor(
            [i not in special and t[:1] == b'"' for i, t in enumerate(token_bytes)]
        )
        digit = torch.tensor(
            [i not in special and t[:1].isdigit() for i, t in enumerate(token_bytes)]
        )
        control = torch.tensor(
            [i not in special and _control_before_quote(t) for i, t in enumerate(token_bytes)]
        )
        vocabulary = _Vocabulary(
            info, xgr.GrammarCompiler(info), token_bytes, quote, ~digit, ~control
        )
        # A new model replaces the old one in the engine: keep only the latest tokenizers.
        if len(_cache) >= 4:
            _cache.pop(next(iter(_cache)))
        _cache[key] = (tokenizer, vocabulary)
        return vocabulary


def _control_before_quote(token: bytes) -> bool:
    for byte in token:
        if byte == 0x22:
            return False
        if byte < 0x20:
            return True
    return False


def compile_schema(
    tokenizer: Any,
    vocab_size: int,
    schema: dict[str, Any],
    stop_token_ids: tuple[int, ...] = (),
) -> tuple[xgr.CompiledGrammar, _Vocabulary]:
    """Compile ``schema`` for a tokenizer (xgrammar caches compiled grammars by schema)."""
    vocabulary = _vocabulary(tokenizer, vocab_size, stop_token_ids)
    schema = copy.deepcopy(schema)
    whitespace = schema.pop(WHITESPACE_KEY, MAX_WHITESPACE)
    text = json.dumps(schema, sort_keys=False)
    try:
        if whitespace == 0:
            compiled = vocabulary.compiler.compile_json_schema(
                text, any_whitespace=False, separators=(",", ":"), strict_mode=True
            )
        else:
            compiled = vocabulary.compiler.compile_json_schema(
                text, any_whitespace=True, max_whitespace_cnt=int(whitespace), strict_mode=True
            )
    except (RuntimeError, ValueError) as exc:
        raise Unsupported(f"This JSON Schema cannot be enforced while decoding: {exc}") from exc
    return compiled, vocabulary


class JsonSchemaLogitsProcessor(LogitsProcessor):
    """Masks the logits of one ``generate`` call to a compiled JSON grammar. Use once."""

    def __init__(
        self,
        compiled: xgr.CompiledGrammar,
        vocabulary: _Vocabulary,
        max_string_chars: int,
        max_digit_run: int = MAX_DIGIT_RUN,
    ) -> None:
        self._matcher = xgr.GrammarMatcher(compiled)
        self._vocabulary = vocabulary
        self._vocab_size = vocabulary.info.vocab_size
        self._bitmask = xgr.allocate_token_bitmask(1, self._vocab_size)
        self._max_string = max_string_chars
        self._max_digits = max_digit_run
        self._started = False
        self._used = False
        # A tiny JSON lexer over the accepted bytes: enough to know "inside a string" and
        # "inside a run of digits", which is all the guards need.
        self._in_string = False
        self._escape = False
        self._string_chars = 0
        self._digit_run = 0
        self._device_masks: dict[tuple[str, int], torch.Tensor] = {}
        self.rejected_token: int | None = None  # set if the model produced an impossible token
        self.guard_steps = 0  # how often a guard changed the choice (for tests and provenance)

    @property
    def completed(self) -> bool:
        """Whether the grammar reached its end (the JSON is complete)."""
        return bool(self._matcher.is_terminated() or self._matcher.is_completed())

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[0] != 1:
            raise ValueError("Schema-constrained generation runs one sequence at a time.")
        if self._started:
            self._accept(int(input_ids[0, -1]))
        else:
            if self._used:
                raise RuntimeError("A JsonSchemaLogitsProcessor is used once; make a new one.")
            self._started = self._used = True
        if self.rejected_token is not None or self._matcher.is_terminated():
            return self._only_stop_tokens(scores)
        self._matcher.fill_next_token_bitmask(self._bitmask, 0)
        width = scores.shape[-1]
        masked = scores.to("cpu") if scores.device.type not in ("cpu", "cuda") else scores
        if width > self._vocab_size:  # padding columns no tokenizer entry maps to
            masked[:, self._vocab_size :] = float("-inf")
        xgr.apply_token_bitmask_inplace(
            masked, self._bitmask.to(masked.device), vocab_size=min(width, self._vocab_size)
        )
        self._guard(masked)
        return masked.to(scores.device) if masked is not scores else masked

    # --- state ------------------------------------------------------------------------------
    def _accept(self, token: int) -> None:
        if self._matcher.is_terminated() or self.rejected_token is not None:
            return
        if not self._matcher.accept_token(token):
            self.rejected_token = token
            return
        if token < len(self._vocabulary.token_bytes):
            self._scan(self._vocabulary.token_bytes[token])

    def _scan(self, data: bytes) -> None:
        for byte in data:
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif byte == 0x5C:  # backslash
                    self._escape = True
                elif byte == 0x22:  # closing quote
                    self._in_string = False
                elif not 0x80 <= byte < 0xC0:  # count characters, not UTF-8 continuation bytes
                    self._string_chars += 1
            elif byte == 0x22:
                self._in_string, self._string_chars, self._digit_run = True, 0, 0
            elif 0x30 <= byte <= 0x39:
                self._digit_run += 1
            else:
                self._digit_run = 0

    # --- guards -----------------------------------------------------------------------------
    def _guard(self, scores: torch.Tensor) -> None:
        if self._in_string and not self._escape:
            self._restrict(scores, self._vocabulary.safe_in_string, count=False)
        if self._in_string and self._string_chars >= self._max_string:
            preferred = self._vocabulary.starts_with_quote
        elif not self._in_string and self._digit_run >= self._max_digits:
            preferred = self._vocabulary.not_starting_with_digit
        else:
            return
        self._restrict(scores, preferred, count=True)

    def _restrict(self, scores: torch.Tensor, preferred: torch.Tensor, *, count: bool) -> None:
        """Keep only preferred tokens, if the grammar allows any: never leave nothing to pick."""
        width = min(scores.shape[-1], preferred.shape[0])
        key = (str(scores.device), id(preferred))
        if key not in self._device_masks:  # copy each mask to the GPU once, not every step
            self._device_masks[key] = preferred.to(scores.device)
        allowed = torch.isfinite(scores[0, :width]) & self._device_masks[key][:width]
        if bool(allowed.any()):
            row = scores[0]
            row[:width][~allowed] = float("-inf")
            row[width:] = float("-inf")
            self.guard_steps += int(count)

    def _only_stop_tokens(self, scores: torch.Tensor) -> torch.Tensor:
        stops = [t for t in self._vocabulary.info.stop_token_ids if t < scores.shape[-1]]
        keep = scores[:, stops].clone()
        scores[:] = float("-inf")
        scores[:, stops] = keep
        return scores


def json_logits_processor(
    tokenizer: Any,
    vocab_size: int,
    schema: dict[str, Any],
    stop_token_ids: tuple[int, ...] = (),
) -> JsonSchemaLogitsProcessor:
    """A fresh processor that keeps one ``generate`` call inside ``schema``."""
    compiled, vocabulary = compile_schema(tokenizer, vocab_size, schema, stop_token_ids)
    return JsonSchemaLogitsProcessor(compiled, vocabulary, guard_length(schema))
