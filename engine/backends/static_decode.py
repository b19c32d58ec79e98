"""Decoding with a static KV cache; on an NVIDIA GPU each one-token step replays a CUDA graph.

Plain ``generate`` with a bitsandbytes 4-bit model spends most of a decode step launching
kernels from Python: a 7B model runs about 1,800 small kernels per token. transformers' own compile
path refuses bitsandbytes 4-bit, so the engine keeps its own loop:

- the KV cache is a ``StaticCache`` allocated once per model in buckets of ``BUCKET`` tokens
  (so its tensors keep their addresses), and the conversation's prefix stays in it between
  turns (``engine.backends.prefix_cache`` decides how much of it a request may reuse);
- prefill on a GPU is captured too. An eager forward of a 4-bit model is launch-bound: a 7B
  model's first turn (576 image tokens and a question) costs ~100 ms of host time against
  ~30 ms of GPU work, most of it in Python around bitsandbytes' matrix products, and a
  40-token follow-up costs about as much as an eager decode step. So:

  - a first turn's language-model part, from the merged embeddings on, replays a graph
    captured for its length rounded up to ``PREFILL_BUCKET`` tokens (up to ``MAX_PREFILL``; a
    few lengths are kept);
  - its picture, where the family's encoder takes one tile's pixels alone (LLaVA, PaliGemma),
    is encoded by a graph captured for the pixels' shape; other encoders read image grids or
    patch masks on the host, and run eagerly;
  - text after a cached prefix (a follow-up) replays a graph of ``CHUNK`` tokens, piece by
    piece (up to ``MAX_PIECES``).

  The two prefills pad their last tokens and cut the cache's length back to the real tokens:
  padding comes after the real tokens (causal: unseen by them) and its keys are overwritten by
  the next write. Anything a graph cannot take (a mask of the family's own, a batch, a longer
  prompt, a fresh cache) prefills eagerly as before;
- the one-token decode step reads its input from a fixed buffer and writes logits to a fixed
  buffer. On CUDA the first step of a cache runs eagerly (warm-up) and is then captured with
  ``torch.cuda.CUDAGraph``; every later step is one ``graph.replay()``. Positions come from the
  cache's own on-device length counter, so the graph needs no host values at all.
- logits processors and sampling run outside the graph with transformers' own processors, so
  greedy output equals ``generate`` token for token, and JSON-schema constraints still apply.

On the CPU the same loop runs eagerly (no graph); the engine uses it there only when asked,
since ``generate`` is as fast on the CPU (``bench/engine_overhead.py``).
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger(__name__)

BUCKET = 256  # cache capacity grows in steps of this many tokens
# A follow-up's text is prefilled by a captured graph this many tokens at a time. A piece's cost
# is mostly reading (for 4-bit, dequantising: ~4.5 bytes per weight) every weight once, which
# does not grow with its tokens, while the products for 64 tokens add only a little: so up to 64
# new tokens (a question, its template, and any end of the last answer that tokenises otherwise
# when sent back as text) are one piece, not two.
CHUNK = 64
# ...up to this many pieces: a longer text is cheaper as one eager prefill, whose kernel
# launches are then a small part of its time.
MAX_PIECES = 4
# A first turn's language-model prefill is captured for its length rounded up to this: a 336-px
# LLaVA image and a question (~620 tokens) pad to 640, and a question's words rarely change the
# bucket. Padding costs GPU time only, which is what the capture frees.
PREFILL_BUCKET = 128
# Longer first turns prefill eagerly: beyond ~2k tokens a 7B prefill's GPU work outlasts its
# launches, and each captured length holds its own activations in the shared pool.
MAX_PREFILL = 2048
MAX_PREFILL_GRAPHS = 4  # captured lengths kept, least recently used dropped
# A picture's encoder is captured too where its call takes the pixels alone (no grid or patch
# mask read on the host: the LLaVA and PaliGemma families) and the picture is one tile; its
# outputs (every layer's hidden states, ~30 MB for CLIP-L at 336 px) stay in the pool.
MAX_VISION_GRAPHS = 2  # pixel shapes kept
# Where the image encoder is found on the family's inner model.
VISION_MODULES = ("vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder")


def capacity_for(tokens: int, limit: int | None = None) -> int:
    """The cache size for ``tokens``: rounded up to a bucket, never above the model's limit."""
    size = -(-tokens // BUCKET) * BUCKET
    return min(size, limit) if limit else size


class StaticDecoder:
    """A model's static KV cache and its captured decode step."""

    cache: Any  # a transformers StaticCache, or None until ``reserve``
    capacity: int

    def __init__(
        self,
        model: Any,
        *,
        mrope: bool = False,
        use_graphs: bool | None = None,
        fuse: bool = False,
        chunk: int | None = None,
        prefill_bucket: int | None = None,
        capture_vision: bool | None = None,
    ) -> None:
        import torch

        self.model = model
        self.device = model.device
        self.mrope = mrope  # Qwen2-VL family: 3-D positions = text position + the image's delta
        on_cuda = self.device.type == "cuda"
        self.use_graphs = on_cuda if use_graphs is None else (use_graphs and on_cuda)
        self._ids = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        # The images' rotary offset of the current conversation (Qwen2-VL family), copied here
        # after each prefill: a captured step must read it from an address that never changes,
        # and the model assigns a new tensor for every new conversation.
        self._deltas = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self.graph_error: str | None = None  # why graphs were given up for this model, if they were
        self.steps_replayed = 0
        self.fused: list[str] = fuse_small_ops(model) if fuse and self.use_graphs else []
        # Captured follow-up prefill (``extend``): on by default wherever the step is captured
        # and the attention takes a ready-made mask; ``chunk`` forces it (tests run it eagerly).
        self.chunk = (CHUNK if self.use_graphs else 0) if chunk is None else chunk
        self.max_pieces = MAX_PIECES
        # Captured first-turn prefill (``prefill``): the same rule; ``prefill_bucket`` forces it.
        self.prefill_bucket = (
            (PREFILL_BUCKET if self.use_graphs else 0) if prefill_bucket is None else prefill_bucket
        )
        self.max_prefill = MAX_PREFILL
        self.prefill_error: str | None = None  # why first turns were left eager, if they were
        self.prefills_replayed = 0  # first turns whose prefill replayed a captured graph
        self.prefills_bucketed = 0  # ...or ran padded to a bucket (eagerly, where asked for)
        # Captured image encoder (``prefill``): wherever graphs are on; ``capture_vision`` forces
        # its buffers on the CPU (run eagerly there).
        self.capture_vision = self.use_graphs if capture_vision is None else capture_vision
        self.vision_error: str | None = None  # why pictures were encoded eagerly, if they were
        self.visions_replayed = 0  # pictures encoded by replaying a captured graph
        self.visions_buffered = 0  # ...or through its buffers (eagerly, where asked for)
        self._mask_kind = _mask_kind(model)
        if self._mask_kind is None:
            self.chunk = 0
            self.prefill_bucket = 0
        self._chunk_ids = torch.zeros((1, max(self.chunk, 1)), dtype=torch.long, device=self.device)
        self._chunk_last = torch.zeros(1, dtype=torch.long, device=self.device)
        self._chunk_offsets = torch.arange(max(self.chunk, 1), device=self.device)
        self.chunk_error: str | None = None  # why follow-ups were left eager, if they were
        self.chunks_replayed = 0
        self.release()  # no cache yet, and nothing captured

    # --- the cache ---------------------------------------------------------------------------
    def reserve(self, tokens: int, keep: int = 0) -> bool:
        """Make room for ``tokens`` in all, keeping the first ``keep`` cached positions.

        Returns whether they were kept: a cache that must grow is copied into the larger one
        (a long conversation keeps its prefix), except where its layers cannot be copied."""
        if self.cache is not None and tokens <= self.capacity:
            return True
        import torch
        from transformers import StaticCache

        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        old = self.cache
        self.release()
        # Never beyond the model's positions, unless the request itself goes beyond them.
        self.capacity = capacity_for(tokens, limit if limit and tokens <= limit else None)
        self.cache = StaticCache(config=self.model.config, max_cache_len=self.capacity)
        self._key_positions = torch.arange(self.capacity, device=self.device)
        if any(getattr(layer, "is_sliding", False) for layer in self.cache.layers):
            # Sliding-window layers keep part of their length in a Python int, which a replayed
            # graph would never advance, and their mask is not the plain causal one the
            # follow-up's pieces build: such models decode eagerly and prefill in one piece.
            self.chunk = 0
            self.prefill_bucket = 0
            if self.use_graphs:
                self.use_graphs = False
                self.graph_error = "sliding-window attention layers: decoding eagerly"
        # The new cache's tensors are allocated like the old one's (and the kept prefix
        # copied), so that its first prefill can already run through a captured graph.
        copied = old is not None and _copy_prefix(old, self.cache, keep)
        return keep > 0 and copied

    def length(self) -> int:
        return int(self.cache.get_seq_length()) if self.cache is not None else 0

    def rewind(self, tokens: int) -> None:
        """Keep only the first ``tokens`` cached positions (later ones are overwritten)."""
        surplus = self.length() - tokens
        if surplus > 0 and tokens == 0:
            self.cache.reset()  # works for every layer kind, sliding windows included
        elif surplus > 0:
            self.cache.crop(-surplus)

    def room_for(self, prompt_tokens: int, new_tokens: int) -> int:
        """Cache positions a turn needs: its prompt and answer, and the padding of a follow-up's
        last piece or of the prompt's own prefill bucket."""
        padded = prompt_tokens
        if self.prefill_bucket and prompt_tokens <= self.max_prefill:
            padded = -(-prompt_tokens // self.prefill_bucket) * self.prefill_bucket
        return max(prompt_tokens + new_tokens + self.chunk, padded)

    def release(self) -> None:
        self.cache = None
        self.capacity = 0
        # The prefill graphs (a follow-up's pieces, each first-turn length, each picture shape's
        # encoder) share one memory pool: one runs at a time and each one's output is read (or
        # copied) before another is replayed, so their dequantised weights and activations need
        # be held once. The step keeps its own.
        self._pool: Any = None
        if self.use_graphs:
            import torch

            self._pool = torch.cuda.graph_pool_handle()
        self._step = _Captured(self._forward)
        self._extend = _Captured(self._chunk_forward, self._pool)
        self._prefills: OrderedDict[tuple[Any, ...], _Prefill] = OrderedDict()
        self._visions: OrderedDict[tuple[Any, ...], _Vision] = OrderedDict()

    # --- the forward passes ------------------------------------------------------------------
    def prefill(self, inputs: dict[str, Any], start: int = 0, padded: bool | None = None) -> Any:
        """Run the new tokens (and any images) after the ``start`` cached positions through the
        model; the last position's logits.

        Where first turns are captured (``prefill_bucket``) the model's own forward runs as
        usual but for its language model, whose forward is swapped for the bucket's graph for
        the length of this call, and its image encoder, swapped for its pixel shape's graph
        (``capture_vision``). ``padded`` says whether the attention mask hides any token; a
        caller that knows it spares a read of the mask on the device (a wait for the GPU)."""
        if padded is None:
            mask = inputs.get("attention_mask")
            padded = mask is not None and not bool(mask.all())
        text_model = None if padded else self._bucketed_text_model(inputs, start)
        vision = self._vision_module(inputs)
        with (
            _swapped_forward(text_model, self._bucketed_text_forward),
            _swapped_forward(vision, self._captured_vision_forward),
        ):
            output = self.model(**inputs, cache=self.cache, use_cache=True, logits_to_keep=1)
        if self.mrope:
            deltas = inner_model(self.model).rope_deltas
            if deltas is None:
                self._deltas.zero_()
            else:
                self._deltas.copy_(deltas.reshape(1, 1))
        return output.logits[:, -1, :]

    def _vision_module(self, inputs: dict[str, Any]) -> Any:
        """The image encoder whose forward a graph can stand in for during this prefill, or
        None (no pictures, no graphs, an earlier failure, no encoder found)."""
        if not self.capture_vision or self.vision_error or inputs.get("pixel_values") is None:
            return None
        inner = inner_model(self.model)
        return next((getattr(inner, name) for name in VISION_MODULES if hasattr(inner, name)), None)

    def _captured_vision_forward(
        self, original: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """The image encoder's forward: through the graph of its pixel shape where the call
        takes one picture's pixels and nothing else read from a tensor, else ``original``."""
        import torch

        places: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
        tensors = [(place, value) for place, value in places if isinstance(value, torch.Tensor)]
        plain = (
            len(tensors) == 1
            and tensors[0][1].shape[0] == 1
            and all(
                value is None or isinstance(value, bool | int | str)
                for _, value in places
                if not isinstance(value, torch.Tensor)
            )
        )
        if not plain:
            return original(*args, **kwargs)
        where, pixels = tensors[0]
        others = tuple(sorted((str(place), value) for place, value in places if place != where))
        key = (where, tuple(pixels.shape), pixels.dtype, others)
        entry = _recent(
            self._visions, key, MAX_VISION_GRAPHS,
            lambda: _Vision(self, original, args, kwargs, where, pixels),
        )  # fmt: skip
        entry.pixels.copy_(pixels)
        self.visions_buffered += 1
        if not self.use_graphs:  # through the buffers, eagerly: where asked for (tests)
            return entry.forward()
        replayed = entry.captured.captured
        output = entry.captured()
        if entry.captured.error is not None:
            self.vision_error = entry.captured.error  # the other graphs are unaffected
            return output
        if not replayed:
            return output  # the warm-up's own copy
        self.visions_replayed += 1
        # A copy: the next picture's replay rewrites the graph's outputs, and the feature cache
        # keeps these.
        return _copied(output)

    def _bucketed_text_model(self, inputs: dict[str, Any], start: int) -> Any:
        """The language model whose forward a graph can stand in for during this prefill, or
        None: one conversation, a cache that holds the bucket and has been written once (its
        tensors exist), no earlier failure."""
        if not self.prefill_bucket or self.prefill_error or self.cache is None:
            return None
        input_ids = inputs.get("input_ids")
        if input_ids is None or input_ids.shape[0] != 1:
            return None
        total = int(input_ids.shape[-1])
        padded = -(-total // self.prefill_bucket) * self.prefill_bucket
        if total > self.max_prefill or start + padded > self.capacity:
            return None
        if not getattr(self.cache.layers[0], "is_initialized", False):
            return None  # a model's first cache is allocated by its first (eager) write
        get_decoder = getattr(self.model, "get_decoder", None)
        return get_decoder() if get_decoder is not None else None

    def _bucketed_text_forward(
        self, original: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """The language model's forward for a prefill: through the graph of its bucket where
        the call is the plain one a family makes (merged embeddings, a 2-D mask of ones, the
        decoder's cache, positions or none), else ``original`` unchanged."""
        embeds: Any = kwargs.get("inputs_embeds")
        positions: Any = kwargs.get("position_ids")
        mask: Any = kwargs.get("attention_mask")
        extras = {
            name: value
            for name, value in kwargs.items()
            if name not in ("inputs_embeds", "position_ids", "attention_mask", "cache", "input_ids")
        }
        plain = (
            not args
            and kwargs.get("input_ids") is None
            and embeds is not None
            and embeds.shape[0] == 1
            and kwargs.get("cache") is self.cache
            and (mask is None or mask.dim() == 2)
            and (positions is None or positions.shape[-1] == embeds.shape[1])
            and all(value is None or isinstance(value, bool | int) for value in extras.values())
        )
        if not plain:
            return original(*args, **kwargs)
        real = int(embeds.shape[1])
        size = -(-real // self.prefill_bucket) * self.prefill_bucket
        rows = None if positions is None else tuple(positions.shape[:-1])
        key = (size, rows, embeds.dtype, tuple(sorted(extras.items())))
        entry = _recent(
            self._prefills, key, MAX_PREFILL_GRAPHS,
            lambda: _Prefill(self, original, size, embeds, positions, extras),
        )  # fmt: skip
        entry.load(embeds, positions)
        self.prefills_bucketed += 1
        if not self.use_graphs:  # padded, eagerly: where asked for (tests)
            hidden = entry.forward()
        else:
            replayed = entry.captured.captured
            hidden = entry.captured()
            if entry.captured.error is not None:
                self.prefill_error = entry.captured.error  # the other graphs are unaffected
            elif replayed:
                self.prefills_replayed += 1
        if real < size:
            self.cache.crop(real - size)
        from transformers.modeling_outputs import BaseModelOutputWithPast

        return BaseModelOutputWithPast(last_hidden_state=hidden[:, :real], cache=self.cache)

    def extend(self, input_ids: Any, start: int) -> Any:
        """Prefill text that follows the ``start`` cached positions (a follow-up question, no
        images); the last position's logits. Where the decoder captures graphs a short text runs
        in ``chunk``-token pieces through a captured forward, otherwise as one eager prefill."""
        total = input_ids.shape[-1]
        pieces = -(-total // self.chunk) if self.chunk else 0
        if (
            not 0 < pieces <= self.max_pieces
            or self.chunk_error
            or start + pieces * self.chunk > self.capacity
        ):
            return self.prefill({"input_ids": input_ids}, start, padded=False)
        logits: Any = None
        for offset in range(0, total, self.chunk):
            piece = input_ids[:, offset : offset + self.chunk]
            real = piece.shape[-1]
            self._chunk_ids[:, :real].copy_(piece)
            # Padding repeats the last token; it lands after the real ones (causal: unseen by
            # them) and the cache's length is cut back below, so the next write replaces it.
            self._chunk_ids[:, real:].copy_(piece[:, -1:].expand(1, self.chunk - real))
            self._chunk_last.fill_(real - 1)
            logits = self._run_chunk()
            if real < self.chunk:
                self.cache.crop(real - self.chunk)
        return logits[:, -1, :]

    def _run_chunk(self) -> Any:
        if not self.use_graphs:  # pieces run eagerly only where asked for (tests)
            return self._chunk_forward()
        replayed = self._extend.captured
        logits = self._extend()
        if self._extend.error is not None:
            self.chunk_error = self._extend.error  # the step's graph is unaffected
        elif replayed:
            self.chunks_replayed += 1
        return logits

    def step(self, token: Any) -> Any:
        """Append one token (a (1, 1) tensor on the model's device); its logits, shape (1, V)."""
        self._ids.copy_(token)
        if not self.use_graphs:
            return self._forward()
        replayed = self._step.captured
        logits = self._step()
        if self._step.error is not None:
            self.graph_error = self._step.error
            self.use_graphs = False
            self.chunk = 0  # follow-ups prefill in one eager piece, as everything else now does
            self.prefill_bucket = 0
        elif replayed:
            self.steps_replayed += 1
        return logits

    def ready(self) -> bool:
        """Whether to queue the next step before the host reads the current token: on a GPU,
        unless the step still has to be captured (that waits for the device). On the CPU a
        step runs as it is called, so the token is streamed first."""
        return self.device.type == "cuda" and (self._step.captured or not self.use_graphs)

    def _positions(self, offsets: Any) -> dict[str, Any]:
        """Position ids for the next tokens, read from the cache's on-device length, where the
        model cannot derive them itself (the Qwen2-VL family adds its images' offset)."""
        if not self.mrope:
            return {}
        length = self.cache.layers[0].cumulative_length
        position = (length + offsets).view(1, 1, -1) + self._deltas.view(1, 1, 1)
        return {"position_ids": position.expand(3, 1, -1)}

    def _forward(self) -> Any:
        output = self.model(
            input_ids=self._ids,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
            **self._positions(self._chunk_offsets[:1]),
        )
        return output.logits[:, -1, :]

    def causal_mask(self, offsets: Any) -> Any:
        """The 4-D mask of new tokens at ``offsets`` after the cache's end, built on the device
        (transformers' own mask builder reads the cache's length on the host for more than one
        new token): each sees the cached positions and itself, in the form the attention takes."""
        length = self.cache.layers[0].cumulative_length
        query = length + offsets
        mask = (self._key_positions[None, :] <= query[:, None])[None, None]
        if self._mask_kind == "additive":
            import torch

            mask = torch.zeros(mask.shape, dtype=self.model.dtype, device=self.device).masked_fill(
                ~mask, torch.finfo(self.model.dtype).min
            )
        return mask

    def _chunk_forward(self) -> Any:
        """``chunk`` tokens at the cache's end."""
        output = self.model(
            input_ids=self._chunk_ids,
            attention_mask=self.causal_mask(self._chunk_offsets),
            cache=self.cache,
            use_cache=True,
            logits_to_keep=self._chunk_last,
            **self._positions(self._chunk_offsets),
        )
        return output.logits


class _Prefill:
    """A first-turn length's buffers and its captured language-model forward."""

    def __init__(
        self,
        decoder: StaticDecoder,
        original: Callable[..., Any],
        size: int,
        embeds: Any,
        positions: Any,
        extras: dict[str, Any],
    ) -> None:
        import torch

        self.decoder = decoder
        self.original = original
        self.extras = extras
        self.embeds: Any = torch.empty(
            (1, size, embeds.shape[-1]), dtype=embeds.dtype, device=embeds.device
        )
        self.positions: Any = (
            None
            if positions is None
            else torch.empty(
                (*positions.shape[:-1], size), dtype=positions.dtype, device=positions.device
            )
        )
        self.offsets = torch.arange(size, device=embeds.device)
        self.captured = _Captured(self.forward, decoder._pool)

    def load(self, embeds: Any, positions: Any) -> None:
        """Copy a prompt's embeddings (and positions) in; padding repeats the last token's."""
        real, size = embeds.shape[1], self.embeds.shape[1]
        self.embeds[:, :real].copy_(embeds)
        self.embeds[:, real:].copy_(embeds[:, -1:].expand(1, size - real, -1))
        if positions is not None:
            self.positions[..., :real].copy_(positions)
            self.positions[..., real:].copy_(
                positions[..., -1:].expand_as(self.positions[..., real:])
            )

    def forward(self) -> Any:
        """The padded tokens at the cache's end; their hidden states (the decoder's cache grows
        by the padded length). Without positions the model derives them from the cache's
        on-device length, as a captured step does."""
        output = self.original(
            inputs_embeds=self.embeds,
            attention_mask=self.decoder.causal_mask(self.offsets),
            position_ids=self.positions,
            cache=self.decoder.cache,
            **self.extras,
        )
        return output.last_hidden_state


class _Vision:
    """A picture shape's pixel buffer and its captured image-encoder forward."""

    def __init__(
        self,
        decoder: StaticDecoder,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        where: int | str,
        pixels: Any,
    ) -> None:
        import torch

        self.pixels: Any = torch.empty_like(pixels)
        self.original = original
        self.args = tuple(
            self.pixels if place == where else value for place, value in enumerate(args)
        )
        self.kwargs = {
            name: self.pixels if name == where else value for name, value in kwargs.items()
        }
        self.captured = _Captured(self.forward, decoder._pool)

    def forward(self) -> Any:
        return self.original(*self.args, **self.kwargs)


@contextmanager
def _swapped_forward(module: Any, forward: Callable[..., Any]) -> Iterator[None]:
    """Within the block ``module``'s forward is ``forward(original, *args, **kwargs)`` (nothing
    is swapped for a None module)."""
    if module is None:
        yield
        return
    own = module.__dict__.get("forward")  # an instance's own forward (accelerate's hooks)
    original = module.forward
    module.forward = functools.partial(forward, original)
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


class _Captured:
    """A forward pass over fixed buffers: run eagerly once on a side stream (the warm-up), then
    captured with ``torch.cuda.CUDAGraph`` and replayed. Used only where graphs are on (CUDA).
    ``pool`` is a memory pool shared with other graphs that never run at the same time."""

    def __init__(self, forward: Callable[[], Any], pool: Any = None) -> None:
        self.forward = forward
        self.pool = pool
        self.graph: Any = None
        self.output: Any = None
        self.error: str | None = None  # why it could not be captured

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self) -> Any:
        if self.graph is not None:
            self.graph.replay()
            return self.output
        if self.error is not None:
            return self.forward()
        import torch

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            result = _copied(self.forward())
        torch.cuda.current_stream().wait_stream(stream)
        # Capturing records kernels without running them: the cache and its length are untouched.
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                self.output = self.forward()
        except Exception as exc:  # a host sync or an op CUDA graphs cannot hold: stay eager
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("forward not capturable, staying eager: %s", self.error)
            self.output = None
            torch.cuda.synchronize()
            return result
        self.graph = graph
        return result


Entry = TypeVar("Entry")


def _recent(
    entries: OrderedDict[Any, Entry], key: Any, limit: int, make: Callable[[], Entry]
) -> Entry:
    """``entries[key]``, made if missing, now the most recent; the least recent beyond
    ``limit`` are dropped (their graphs with them)."""
    entry = entries.get(key)
    if entry is None:
        entry = entries[key] = make()
        while len(entries) > limit:
            entries.popitem(last=False)
    entries.move_to_end(key)
    return entry


def _copied(output: Any) -> Any:
    """``output`` with each tensor in it cloned (a tensor, a tuple, a ModelOutput)."""
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda value: value.clone() if torch.is_tensor(value) else value, output)


def _mask_kind(model: Any) -> str | None:
    """How the model's attention takes a ready-made 4-D mask: boolean (SDPA), additive (eager);
    None where it takes none (flash attention keeps its own causal rule)."""
    implementation = getattr(model.config.get_text_config(), "_attn_implementation", None)
    return {"sdpa": "boolean", "eager": "additive"}.get(implementation or "")


def _copy_prefix(old: Any, new: Any, tokens: int) -> bool:
    """Allocate every layer of ``new`` as ``old``'s is and copy in its first ``tokens``
    positions (none: only allocated); False where the layers cannot be carried over."""
    pairs = list(zip(old.layers, new.layers, strict=True))
    if any(
        getattr(layer, "is_sliding", False) or not getattr(layer, "is_initialized", False)
        for layer, _ in pairs
    ):
        return False
    for source, target in pairs:
        target.lazy_initialization(source.keys, source.values)  # shapes, dtype, device
        target.keys[:, :, :tokens].copy_(source.keys[:, :, :tokens])
        target.values[:, :, :tokens].copy_(source.values[:, :, :tokens])
        target.cumulative_length.fill_(tokens)
    return True


def inner_model(model: Any) -> Any:
    """The family's inner model (``ForConditionalGeneration.model``), under any peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "model", base)


def fuse_small_ops(model: Any) -> list[str]:
    """Compile the elementwise chains that dominate a captured decode step: RMSNorm and rotary.

    A 7B decode step is ~50 kernels per layer, most of them tiny (norm: cast, square, mean,
    rsqrt, two products; rotary: slices, negation, concatenation, products, sums). Even inside
    a CUDA graph each costs a few microseconds, more than the 4-bit matrix products. Inductor
    fuses each chain into one kernel; the bitsandbytes layers stay as they are. Shapes are
    dynamic, so prefill lengths do not recompile. Returns what was compiled."""
    import sys

    import torch

    fused: list[str] = []
    for module in model.modules():
        name = type(module).__name__
        if name.endswith("RMSNorm") and not getattr(module, "_vd_fused", False):
            module.compile(dynamic=True)
            module._vd_fused = True
            if name not in fused:
                fused.append(name)
        if name.endswith("Attention"):
            namespace = sys.modules[type(module).__module__]
            for function in ("apply_rotary_pos_emb", "apply_multimodal_rotary_pos_emb"):
                original = getattr(namespace, function, None)
                if original is None or getattr(original, "_vd_fused", False):
                    continue
                compiled = torch.compile(original, dynamic=True)
                compiled._vd_fused = True  # type: ignore[attr-defined]
                setattr(namespace, function, compiled)
                fused.append(f"{namespace.__name__.rsplit('.', 1)[-1]}.{function}")
    return fused


def decode(
    decoder: StaticDecoder,
    first_logits: Any,
    prompt_ids: Any,
    *,
    max_new_tokens: int,
    processors: Any,
    sample: bool,
    eos_ids: set[int],
    on_token: Callable[[int], None],
    should_stop: Callable[[], bool],
    min_new_tokens: int = 0,
) -> list[int]:
    """Generate from the logits that follow ``prompt_ids``; the new token ids.

    ``processors`` is a transformers ``LogitsProcessorList`` (penalties, temperature, top-p,
    grammar). The host never waits for a step it does not need: each token is chosen on the
    device, its step is queued at once, and only then does the host read the token (a copy
    queued before that step) to stream it and check EOS and cancel while the GPU runs. A stop
    therefore leaves one extra token in the cache, which is harmless: the cache's length is
    what the conversation cache records. ``on_token`` receives each new id."""
    import torch

    suppress = _eos_index(eos_ids, first_logits.device) if min_new_tokens > 0 else None
    host = _HostCopy(first_logits.device)
    sequence = prompt_ids
    new: list[int] = []
    token = _choose(processors, sequence, first_logits, sample, suppress)

    def after(produced: int) -> Any:
        """Queue the step that feeds ``token``; the choice of the token after it."""
        banned = suppress if produced < min_new_tokens else None
        return _choose(processors, sequence, decoder.step(token[:, None]), sample, banned)

    while True:
        sequence = torch.cat([sequence, token[:, None]], dim=-1)
        host.start(token)
        more = len(new) + 1 < max_new_tokens
        # Queued before the host reads `token`, unless the step still has to be captured.
        following = after(len(new) + 1) if more and decoder.ready() else None
        value = host.value()
        new.append(value)
        on_token(value)
        if not more or value in eos_ids or should_stop():
            return new
        token = following if following is not None else after(len(new))


def _choose(processors: Any, sequence: Any, logits: Any, sample: bool, banned: Any) -> Any:
    """The next token as a (1,) tensor on the device, chosen as ``generate`` would."""
    import torch

    scores = processors(sequence, logits.float())
    if banned is not None:
        scores = scores.index_fill(-1, banned, -float("inf"))
    if sample:
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)[:, 0]
    return torch.argmax(scores, dim=-1)


def _eos_index(eos_ids: set[int], device: Any) -> Any:
    import torch

    return torch.tensor(sorted(eos_ids), dtype=torch.long, device=device) if eos_ids else None


class _HostCopy:
    """A token's way to the host: on CUDA a copy into pinned memory with an event, so reading
    it waits for that copy only and not for work queued after it."""

    def __init__(self, device: Any) -> None:
        import torch

        self._cuda = device.type == "cuda"
        self._buffer = torch.zeros(1, dtype=torch.long, pin_memory=self._cuda)
        self._event: Any = torch.cuda.Event() if self._cuda else None
        self._token: Any = None

    def start(self, token: Any) -> None:
        if self._cuda:
            self._buffer.copy_(token, non_blocking=True)
            self._event.record()
        else:
            self._token = token

    def value(self) -> int:
        if self._cuda:
            self._event.synchronize()
            return int(self._buffer[0])
        return int(self._token[0])
