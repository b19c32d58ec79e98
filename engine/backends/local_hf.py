"""Local models through transformers: Auto classes, the processor's chat template, bitsandbytes.

Any architecture that transformers maps to image-text-to-text loads here without new code;
family differences live in ``engine.models.families``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.backends.base import CancelCheck, GenerationResult, TextSink
from engine.backends.feature_cache import FeatureCache, PixelCache
from engine.backends.prefix_cache import PrefixCache, image_key, image_token_ids
from engine.backends.static_decode import StaticDecoder, decode
from engine.documents.images import load_image, pad_to_aspect
from engine.errors import BadInput, ModelNotFound, Unsupported, classify
from engine.models.families import Quirks, quirks_for
from engine.models.resolve import (
    ResolvedModel,
    check_image_text_to_text,
    check_remote_code,
    check_weights,
    resolve_model,
)
from engine.protocol import CHAT_IMAGE_MAX_PIXELS, ChatMessage, ModelInfo, Sampling
from engine.runtime import LoadSpec

log = logging.getLogger(__name__)

NATIVE_RESOLUTION_MAX_ASPECT = 150.0  # under the 200 that Qwen2-VL's smart_resize allows


@dataclass
class Turn:
    """One request on its way through generation: its inputs and how it reports and stops."""

    inputs: Any  # processor outputs, on the host
    images: tuple[str, ...]  # content hashes of its pictures, in order
    sampling: Sampling
    processors: Any  # a LogitsProcessorList: the caller's constraints (JSON schema)
    streamer: Any  # an IncrementalStreamer
    stop: Any  # a CancelCriteria


def _torch_dtype(device: str) -> Any:
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def _prefix_budget(device: str) -> int:
    """Memory the last conversation's KV cache may keep: a fifth of the GPU, at most 2 GiB."""
    import torch

    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        return min(2 * 2**30, total // 5)
    return 1 * 2**30


def use_static_decode(device: str) -> bool:
    """Whether a newly loaded model decodes with the static loop.

    ``VISIONDESK_DECODE``: ``auto`` (the default: on CUDA GPUs), ``static`` (everywhere, eager
    off CUDA) or ``generate`` (never: transformers' own loop, for troubleshooting)."""
    import os

    choice = os.environ.get("VISIONDESK_DECODE", "auto").strip().lower()
    if choice not in ("auto", "static", "generate"):
        log.warning("VISIONDESK_DECODE=%s is not auto, static or generate; using auto", choice)
        choice = "auto"
    return choice == "static" or (choice == "auto" and device == "cuda")


def quantization_config(quant: str, compute_dtype: Any) -> Any:
    """The bitsandbytes config for a quantisation choice (None for full precision)."""
    from transformers import BitsAndBytesConfig

    if quant == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant == "none":
        return None
    raise Unsupported(f"Unknown quantisation {quant!r}; choose nf4, int8 or none.")


class LocalHFBackend:
    """A model resident in this process, answering with ``model.generate``."""

    name = "local"

    def __init__(
        self, resolved: ResolvedModel, model: Any, processor: Any, quant: str, device: str
    ) -> None:
        self.resolved = resolved
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.quant = quant
        self.device = device
        self.quirks: Quirks = quirks_for(resolved.model_type)
        self.prefix_cache = PrefixCache(_prefix_budget(device))
        self._image_token_ids = image_token_ids(model.config)
        # A picture seen before (another conversation, another extraction field) is not
        # encoded again.
        self.feature_cache = FeatureCache(_prefix_budget(device) // 8)
        self.feature_cache.install(model)
        self.pixel_cache = PixelCache()
        self.pixel_cache.install(processor)
        # An adapter's pictures keep the size it was trained at (set on the processor at load).
        self.adapter_image_budget: int | None = None
        self._decoded: dict[str, Any] = {}  # image key -> decoded picture, oldest first
        # The static-cache loop (CUDA graphs on NVIDIA GPUs) where the family supports it; on
        # the CPU plain generate() is as fast, so it is used there unless asked for.
        self.decoder: StaticDecoder | None = None
        self.set_static_decode(use_static_decode(device))
        self._info = ModelInfo(
            model=resolved.name,
            path=str(resolved.path),
            family=resolved.model_type,
            quant=quant,
            device=device,
            dtype=str(model.dtype).removeprefix("torch."),
            memory_bytes=int(model.get_memory_footprint()),
        )

    # --- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: LoadSpec) -> LocalHFBackend:
        from engine.devices import resolve_device, resolve_quant

        resolved = resolve_model(spec.model)
        check_remote_code(resolved, spec.trust_remote_code)
        check_weights(resolved, spec.allow_pickle)
        check_image_text_to_text(resolved, spec.trust_remote_code)
        device = resolve_device(spec.device)
        quant = resolve_quant(spec.quant, device)
        model, processor = _load_pretrained(resolved, spec, device, quant)
        backend = cls(resolved, model, processor, quant, device)
        if spec.adapter:
            backend.adapter_image_budget = _use_training_image_budget(processor, spec.adapter)
            backend._info.adapter = spec.adapter
        return backend

    def info(self) -> ModelInfo:
        import msgspec

        return msgspec.structs.replace(self._info, decoding=self.decoding())

    def decoding(self) -> str:
        """How this model decodes now: "cuda-graphs", "static" (eager) or "generate"."""
        if self.decoder is None:
            return "generate"
        return "cuda-graphs" if self.decoder.use_graphs else "static"

    def set_static_decode(
        self,
        enabled: bool,
        use_graphs: bool | None = None,
        fuse: bool = False,
        chunk: int | None = None,
        prefill_bucket: int | None = None,
        capture_vision: bool | None = None,
    ) -> bool:
        """Use the engine's static-cache decode loop (True) or ``generate`` (False).

        Returns whether the static loop is now in use: families whose generation needs more than
        the KV cache between steps keep ``generate``."""
        self.prefix_cache.clear()
        if self.decoder is not None:
            self.decoder.release()
        self.decoder = None
        if enabled and self.quirks.static_decode:
            self.decoder = StaticDecoder(
                self.model,
                mrope=self.quirks.mrope,
                use_graphs=use_graphs,
                fuse=fuse,
                chunk=chunk,
                prefill_bucket=prefill_bucket,
                capture_vision=capture_vision,
            )
        return self.decoder is not None

    def warm_up(
        self, on_progress: Callable[[str], None] = lambda _message: None, force: bool = False
    ) -> None:
        """Before the first request: allocate the cache, capture the decode step and the
        prefills, and run once each kind of work a chat does (an image, a first turn's long
        prefill, a follow-up's short prefill at an offset), so the first person's question does
        not pay for loading kernels. Only where a step is captured (CUDA), unless ``force``."""
        if self.decoder is None or not (self.decoder.use_graphs or force):
            return
        on_progress("Preparing fast decoding")
        import tempfile
        from pathlib import Path

        from PIL import Image

        from engine.backends.static_decode import BUCKET

        # A chat with one picture and the app's longest answer by default (1,024 tokens) fits;
        # a longer one grows the cache, and its graphs are captured again.
        self.decoder.reserve(8 * BUCKET)
        short = Sampling(max_new_tokens=3, temperature=0.0)
        with tempfile.TemporaryDirectory(prefix="vd-warm-up-") as folder:
            picture = Path(folder) / "grey.png"
            Image.new("RGB", (336, 336), (128, 128, 128)).save(picture)
            turn = [ChatMessage(role="user", text="Hello", images=[str(picture)])]
            # Twice: the first write allocates the cache's tensors (eagerly), the second
            # captures the prefill of a picture and a short question.
            self.chat(turn, short, on_text=lambda _t: None, cancelled=lambda: False)
            self.prefix_cache.clear()
            first = self.chat(turn, short, on_text=lambda _t: None, cancelled=lambda: False)
            follow_up = [
                *turn,
                ChatMessage(role="assistant", text=first.text),
                ChatMessage(role="user", text="And then?"),
            ]
            self.chat(follow_up, short, on_text=lambda _t: None, cancelled=lambda: False)
        self.forget_images()

    def forget_images(self) -> None:
        """Drop every cache of what earlier requests saw: the conversation, features, pixels."""
        self.prefix_cache.clear()
        self.feature_cache.clear()
        self.pixel_cache.clear()
        self._decoded.clear()

    def release_memory(self) -> None:
        """Give back every cache of earlier requests and the decode loop's KV cache (it is
        allocated anew by the next turn), then return freed blocks to the device."""
        import gc

        self.forget_images()
        if self.decoder is not None:
            self.decoder.release()
        gc.collect()
        if self.model is not None and self.model.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def close(self) -> None:
        self.release_memory()
        self.decoder = None
        self.model = None
        self.processor = None

    # --- inputs ------------------------------------------------------------------------------
    def build_inputs(
        self,
        messages: list[ChatMessage],
        image_keys: tuple[str, ...] = (),
        on_device: bool = True,
        image_max_pixels: int | None = None,
    ) -> Any:
        """Processor inputs for a conversation, on the model's device (public for tests/bench).

        ``image_keys`` (content hashes of the images, in order) let the image processor's work
        be reused for pictures it has seen. ``on_device=False`` leaves them on the host, for a
        caller that moves only what it uses (a follow-up turn needs no pixels).
        ``image_max_pixels``: see ``image_budget``."""
        if not messages or messages[-1].role != "user":
            raise BadInput("A chat request must end with a user message.")
        paths = [path for message in messages for path in message.images]
        if len(image_keys) == len(paths):
            images = [
                self._decoded_image(path, key) for path, key in zip(paths, image_keys, strict=True)
            ]
        else:
            images = [load_image(path) for path in paths]
        if hasattr(getattr(self.processor, "image_processor", None), "merge_size"):
            # The Qwen2-VL family refuses a strip whose sides differ 200-fold; padded, it is read.
            images = [pad_to_aspect(image, NATIVE_RESOLUTION_MAX_ASPECT) for image in images]
        prompt = self._render_prompt(messages)
        try:
            with self.pixel_cache.images(image_keys):
                inputs = self.processor(
                    text=[prompt],
                    images=images or None,
                    return_tensors="pt",
                    **self.quirks.processor_kwargs,
                    **(self.image_budget(image_max_pixels) if images else {}),
                )
        except (ValueError, TypeError) as exc:
            raise BadInput(f"The model's processor rejected this input: {exc}") from exc
        return self._to_device(inputs) if on_device else inputs

    def image_budget(self, max_pixels: int | None) -> dict[str, int]:
        """The processor's pixel cap for a request, for processors that keep a picture's own
        resolution (the Qwen2-VL family; others resize to their fixed sizes or tiles): at most
        ``max_pixels`` (None: ``CHAT_IMAGE_MAX_PIXELS``), never more than the model's own limit
        nor less than its minimum. Nothing for an adapter, which keeps its training size."""
        image_processor = getattr(self.processor, "image_processor", None)
        if not hasattr(image_processor, "merge_size") or self.adapter_image_budget:
            return {}
        size = dict(getattr(image_processor, "size", None) or {})
        cap = max_pixels or CHAT_IMAGE_MAX_PIXELS
        if size.get("longest_edge"):  # Qwen's "longest_edge" is a pixel count
            cap = min(cap, int(size["longest_edge"]))
        if size.get("shortest_edge"):
            cap = max(cap, int(size["shortest_edge"]))
        return {"max_pixels": cap}

    def _to_device(self, inputs: Any) -> Any:
        return inputs.to(self.model.device, dtype=self.model.dtype)

    def _decoded_image(self, path: str, key: str) -> Any:
        """A picture decoded once for the last few requests (a follow-up sends it again)."""
        image = self._decoded.pop(key, None)
        if image is None:
            image = load_image(path)
        self._decoded[key] = image
        while len(self._decoded) > 4:
            self._decoded.pop(next(iter(self._decoded)))
        return image

    def _render_prompt(self, messages: list[ChatMessage]) -> str:
        template = getattr(self.processor, "chat_template", None) or getattr(
            self.tokenizer, "chat_template", None
        )
        if self.quirks.prompt_format == "chat_template" and template:
            from jinja2 import TemplateError

            try:
                return self._apply_template(messages)
            except TemplateError as exc:  # e.g. "System role not supported"
                if not any(message.role == "system" for message in messages):
                    raise BadInput(f"The model's chat template rejected this input: {exc}") from exc
                return self._apply_template(_fold_system(messages))
        if self.quirks.prompt_format == "prefix":
            return messages[-1].text  # a task prompt (PaliGemma): no room for instructions
        return _plain_prompt(_fold_system(messages))

    def _apply_template(self, messages: list[ChatMessage]) -> str:
        conversation = [_hf_message(message) for message in messages]
        return str(
            self.processor.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=False
            )
        )

    def generation_kwargs(self, sampling: Sampling) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = sampling.repetition_penalty
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            kwargs["pad_token_id"] = self.tokenizer.eos_token_id
        return kwargs

    # --- generation --------------------------------------------------------------------------
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
        import torch
        from transformers import LogitsProcessorList

        from engine.backends.streaming import CancelCriteria, IncrementalStreamer

        started = time.perf_counter()
        images = tuple(image_key(path) for message in messages for path in message.images)
        inputs = self.build_inputs(messages, images, False, image_max_pixels)
        for attempt in (1, 2):
            processors = LogitsProcessorList()  # a grammar's matcher starts afresh each attempt
            if json_schema is not None:
                processors.append(self._json_processor(json_schema))
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            streamer = IncrementalStreamer(self.tokenizer, on_text)
            stop = CancelCriteria(cancelled)
            try:
                with torch.inference_mode(), self.feature_cache.images(images):
                    turn = Turn(inputs, images, sampling, processors, streamer, stop)
                    decoded = None
                    if self.decoder is not None:
                        decoded = self._decode_static_or_fall_back(turn)
                    if decoded is None:
                        decoded = self._generate(turn)
                    new_ids, cached_tokens = decoded
                break
            except Exception as exc:
                error = classify(exc)
                if error.code != "out_of_memory":
                    self.prefix_cache.clear()
                    raise error from exc
                # What earlier requests left behind (their KV cache, image features) may be
                # what no longer fits: give it all back, and try once more if nothing was said.
                self.release_memory()
                if attempt == 2 or streamer.token_ids:
                    raise error from exc
                log.warning("out of memory in %s; retrying with caches released", self._info.model)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        text = streamer.finish(self.tokenizer.decode(new_ids, skip_special_tokens=True))
        first = streamer.first_token_at
        return GenerationResult(
            text=text,
            reason=self._finish_reason(new_ids, sampling, stop.triggered),
            token_ids=new_ids,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(new_ids),
            cached_tokens=cached_tokens,
            time_to_first_token_s=(first - started) if first else None,
            seconds=time.perf_counter() - started,
        )

    def _generate(self, turn: Turn) -> tuple[list[int], int]:
        """transformers' ``generate``, reusing the last conversation's dynamic cache."""
        from transformers import StoppingCriteriaList

        inputs, images, sampling = turn.inputs, turn.images, turn.sampling

        prompt_ids = inputs["input_ids"][0].tolist()
        reuse = None
        if self.quirks.reuse_prefix:
            reuse = self.prefix_cache.take(prompt_ids, images, self._image_token_ids)
        cached_tokens = 0
        if reuse is None:
            generate_inputs = dict(self._to_device(inputs))
        else:
            # Everything up to `cached_tokens`, images included, is already in the cache: the
            # vision inputs are left out so the vision tower does not run again.
            cache, cached_tokens = reuse
            device = self.model.device
            generate_inputs = {
                "input_ids": inputs["input_ids"].to(device),
                "attention_mask": inputs["attention_mask"].to(device),
                "cache": cache,
            }
        output = self.model.generate(
            **generate_inputs,
            **self.generation_kwargs(sampling),
            streamer=turn.streamer,
            stopping_criteria=StoppingCriteriaList([turn.stop]),
            logits_processor=turn.processors,
            return_dict_in_generate=True,
        )
        sequence = output.sequences[0]
        kept = getattr(output, "cache", None)
        if self.quirks.reuse_prefix and kept is not None:
            covered = int(kept.get_seq_length())
            self.prefix_cache.store(sequence[:covered].tolist(), images, kept)
        return sequence[len(prompt_ids) :].tolist(), cached_tokens

    def _decode_static_or_fall_back(self, turn: Turn) -> tuple[list[int], int] | None:
        """The static loop; None (and ``generate`` from now on) if it fails before any token.

        Out of memory is the person's to see, with its advice; anything else the loop cannot do
        for this model (an untested family's forward, say) must not cost them the answer."""
        try:
            return self._decode_static(turn)
        except Exception as exc:
            if turn.streamer.token_ids or classify(exc).code == "out_of_memory":
                raise
            log.warning("static decode failed for %s, using generate: %r", self._info.model, exc)
            self.set_static_decode(False)
            return None

    def _decode_static(self, turn: Turn, min_new_tokens: int = 0) -> tuple[list[int], int]:
        """The engine's own loop: static cache kept between turns, decode step as a CUDA graph."""
        inputs, images, sampling, streamer = turn.inputs, turn.images, turn.sampling, turn.streamer
        decoder = self.decoder
        assert decoder is not None
        input_ids = inputs["input_ids"]
        prompt_ids = input_ids[0].tolist()
        cached_tokens = 0
        if self.quirks.reuse_prefix:
            reuse = self.prefix_cache.take(prompt_ids, images, self._image_token_ids)
            if reuse is not None and reuse[0] is decoder.cache:
                cached_tokens = reuse[1]  # take() has cut the cache back to the shared prefix
        room = decoder.room_for(len(prompt_ids), sampling.max_new_tokens)
        if not decoder.reserve(room, keep=cached_tokens):
            cached_tokens = 0  # a new cache, or one whose layers could not be carried over
        streamer.put(input_ids)
        if cached_tokens == 0:
            decoder.rewind(0)
            mask = inputs.get("attention_mask")
            padded = mask is not None and not bool(mask.all())  # read where it is (the host)
            forward = {k: v for k, v in self._to_device(inputs).items() if k != "labels"}
            first_logits = decoder.prefill(forward, padded=padded)
        else:
            # Only the new text: the images and the conversation so far are in the cache.
            new_text = input_ids[:, cached_tokens:].to(self.model.device)
            first_logits = decoder.extend(new_text, start=cached_tokens)
        input_ids = input_ids.to(self.model.device)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        try:
            new_ids = decode(
                decoder,
                first_logits,
                input_ids,
                max_new_tokens=sampling.max_new_tokens,
                processors=self._sampling_processors(sampling, turn.processors),
                sample=sampling.temperature > 0,
                eos_ids=eos_ids,
                on_token=lambda token: streamer.add([token]),
                should_stop=turn.stop.should_stop,
                min_new_tokens=min_new_tokens,
            )
        except Exception:
            decoder.rewind(0)
            raise
        if self.quirks.reuse_prefix:
            covered = decoder.length()
            self.prefix_cache.store((prompt_ids + new_ids)[:covered], images, decoder.cache)
        return new_ids, cached_tokens

    def _sampling_processors(self, sampling: Sampling, extra: Any) -> Any:
        """The processors ``generate`` would apply, in its order: penalties, ours, warpers."""
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        processors = LogitsProcessorList()
        if sampling.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
        processors.extend(extra)
        if sampling.temperature > 0:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
            top_k = self.model.generation_config.top_k
            if top_k:
                processors.append(TopKLogitsWarper(top_k))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        return processors

    def _json_processor(self, json_schema: dict[str, Any]) -> Any:
        """A fresh xgrammar processor for this call: its matcher holds this answer's state."""
        from engine.extraction.constrained import json_logits_processor

        eos = self.model.generation_config.eos_token_id
        stops = tuple(eos if isinstance(eos, list) else [eos]) if eos is not None else ()
        vocab = max(int(self.model.config.get_text_config().vocab_size), len(self.tokenizer))
        return json_logits_processor(self.tokenizer, vocab, json_schema, stops)

    def _finish_reason(self, new_ids: list[int], sampling: Sampling, cancelled: bool) -> Any:
        if cancelled:
            return "cancelled"
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if new_ids and new_ids[-1] in eos_ids:
            return "done"
        return "length" if len(new_ids) >= sampling.max_new_tokens else "done"


def _hf_message(message: ChatMessage) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image"} for _ in message.images]
    content.append({"type": "text", "text": message.text})
    return {"role": message.role, "content": content}


def _fold_system(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Instructions put before the first user turn, for templates that have no system role."""
    system = "\n\n".join(m.text for m in messages if m.role == "system" and m.text)
    turns = [m for m in messages if m.role != "system"]
    if not system or not turns:
        return turns
    first = next((i for i, m in enumerate(turns) if m.role == "user"), 0)
    folded = ChatMessage(
        role=turns[first].role, text=f"{system}\n\n{turns[first].text}", images=turns[first].images
    )
    return [*turns[:first], folded, *turns[first + 1 :]]


def _plain_prompt(messages: list[ChatMessage]) -> str:
    """For families without a chat template: 'Question: … Answer: …' turns."""
    parts = []
    for message in messages:
        if message.role == "user":
            parts.append(f"Question: {message.text} Answer:")
        elif message.role == "assistant":
            parts.append(f" {message.text}")
    return "".join(parts).strip()


def _load_pretrained(
    resolved: ResolvedModel, spec: LoadSpec, device: str, quant: str
) -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress goes to the client as events, not to stderr
    dtype = _torch_dtype(device)
    quant_config = quantization_config(quant, dtype)
    if quant_config is not None:
        _require_bitsandbytes(quant)
    if spec.adapter and quant_config is not None:
        from engine.finetune.adapters import skip_modules_for

        # An adapter's fully trained projector cannot sit on 4-bit layers: keep what it names whole.
        quant_config.llm_int8_skip_modules = skip_modules_for(spec.adapter) or None
    device_map = {"": 0} if device == "cuda" else {"": device}
    log.info("loading %s (%s, %s on %s)", resolved.path, resolved.model_type, quant, device)
    try:
        processor = AutoProcessor.from_pretrained(
            resolved.path, trust_remote_code=spec.trust_remote_code
        )
        model = AutoModelForImageTextToText.from_pretrained(
            resolved.path,
            dtype=dtype,
            quantization_config=quant_config,
            device_map=device_map,
            use_safetensors=resolved.has_safetensors or not spec.allow_pickle,
            trust_remote_code=spec.trust_remote_code,
        )
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        error = classify(exc)
        if error.code == "out_of_memory":
            raise error from exc
        raise ModelNotFound(f"Could not load {resolved.name}: {exc}") from exc
    if spec.adapter:
        from engine.finetune.adapters import apply_adapter

        model = apply_adapter(model, spec.adapter)  # peft adapter over the (quantised) base
    model.eval()
    return model, processor


def _use_training_image_budget(processor: Any, adapter: str) -> int | None:
    """Images reach an adapter at the size it was trained on (Qwen2-VL family's pixel cap);
    that cap, where it had one."""
    from engine.finetune.adapters import read_notes
    from engine.finetune.collate import apply_image_budget

    budget = read_notes(adapter).get("image_max_pixels")
    if budget and apply_image_budget(processor, int(budget)):
        log.info("image budget of the adapter: %d pixels", int(budget))
        return int(budget)
    return None


def _require_bitsandbytes(quant: str) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise Unsupported(
            f"{quant} quantisation needs the bitsandbytes package, which is not installed."
        ) from exc
