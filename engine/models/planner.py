"""The memory planner: what a model needs on a device, from its config and processor files alone.

The model is built on the meta device (no memory, no weights) to count parameters per part and to
find the Linear layers bitsandbytes would quantise, using transformers' own rule. Image tokens
are counted with the real processor (``engine.models.image_tokens``). Bytes per parameter:
NF4 with double quantisation stores 4 bits plus one 8-bit absmax per 64 weights plus one fp32
absmax per 256 blocks; int8 one byte plus an fp32 scale per row; everything bitsandbytes leaves
alone (embeddings, norms, lm_head, fp32-kept modules) stays in its dtype.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import ModelNotFound, OutOfMemory, Unsupported
from engine.models import image_tokens
from engine.models.families import quirks_for
from engine.models.resolve import PICKLE_SUFFIXES, ResolvedModel, check_remote_code, resolve_model
from engine.protocol import DeviceInfo
from engine.protocol.models import GIB, MemoryPlan, PlanMemory, fit_verdict

log = logging.getLogger(__name__)

MIB = 1024**2
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)
CUDA_CONTEXT_BYTES = 600 * MIB  # driver context + cuBLAS workspace: outside torch's allocator
ALLOCATOR_SLACK = 0.05  # caching-allocator fragmentation on top of what torch allocated
CPU_RUNTIME_BYTES = 1 * GIB  # the engine process itself: Python, torch and library code
# Transient activations per token and layer, in units of hidden/intermediate size (measured on a
# GPU with bench/memory_plan_gpu.py): residual stream, q/k/v/o, gate/up/activation.
ACT_HIDDEN = 6
ACT_INTERMEDIATE = 3
EMBEDDING_TYPES = frozenset({"clip", "siglip", "siglip2", "chinese_clip", "align", "altclip"})
_VISION_KEYS = frozenset(
    {"vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder", "vision_embed"}
)
_PROJECTOR_KEYS = frozenset(
    {
        "multi_modal_projector",
        "mm_projector",
        "connector",
        "qformer",
        "query_tokens",
        "language_projection",
        "perceiver_resampler",
        "visual_projection",
        "image_newline",
        "mlp1",
    }
)


@dataclass
class PartCount:
    """Parameters of one part of the model, split by how bitsandbytes stores them."""

    quantizable: int = 0  # weights of Linear layers bitsandbytes converts
    quantizable_rows: int = 0  # their out_features (int8 keeps one fp32 scale per row)
    compute: int = 0  # everything else kept in the compute dtype
    fp32: int = 0  # modules the model keeps in float32

    @property
    def total(self) -> int:
        return self.quantizable + self.compute + self.fp32

    def bytes(self, quant: str, dtype_bytes: int) -> int:
        if quant == "nf4":
            quantized = self.quantizable * NF4_BYTES_PER_PARAM
        elif quant == "int8":
            quantized = self.quantizable + 4 * self.quantizable_rows
        else:
            quantized = self.quantizable * dtype_bytes
        return int(quantized + self.compute * dtype_bytes + self.fp32 * 4)


@dataclass
class Skeleton:
    """What the meta-device model says about the weights."""

    parts: dict[str, PartCount] = field(default_factory=dict)
    buffer_bytes: int = 0
    largest_linear: int = 0
    keeps_all_logits: bool = False  # forward() has no logits_to_keep: prefill logits are full

    def part(self, name: str) -> PartCount:
        return self.parts.setdefault(name, PartCount())


@dataclass(frozen=True)
class Shape:
    """The request planned for: image size, image count, text context."""

    width: int
    height: int
    images: int
    context: int


@dataclass(frozen=True)
class Target:
    quant: str
    device: str
    dtype_bytes: int
    dtype: str
    available: int | None
    device_name: str


# --- public -------------------------------------------------------------------------------------


def plan_memory(
    command: PlanMemory,
    devices: list[DeviceInfo],
    cancelled: Callable[[], bool] = lambda: False,
) -> MemoryPlan:
    """Plan ``command.model`` on the detected device (or ``command.vram_bytes``).

    ``cancelled`` is heard while config files are fetched from the Hub (``Cancelled``)."""
    resolved = _resolve(command, cancelled)
    check_remote_code(resolved, command.trust_remote_code)
    config = _load_config(resolved, command.trust_remote_code)
    target = _target(command, devices)
    skeleton = build_skeleton(config, resolved.model_type, command.trust_remote_code, target)
    processor = image_tokens.load_processor(resolved.path, command.trust_remote_code)
    embedding = resolved.model_type in EMBEDDING_TYPES

    def assemble(quant: str, width: int, height: int, images: int, context: int) -> MemoryPlan:
        cost = image_tokens.measure(
            processor, config, resolved.model_type, width, height, images, embedding
        )
        shape = Shape(width, height, images, context)
        return _assemble(
            command.model, resolved, config, skeleton, replace(target, quant=quant), cost, shape
        )

    plan = assemble(
        target.quant, command.image_width, command.image_height, command.images,
        command.context_tokens,
    )  # fmt: skip
    if plan.verdict in ("tight", "does_not_fit"):
        plan.advice = _advice(plan, assemble)
    return plan


def build_skeleton(
    config: Any, model_type: str, trust_remote_code: bool, target: Target
) -> Skeleton:
    """Build the model on the meta device and count its parameters per part."""
    import torch
    from transformers import AutoModel, AutoModelForImageTextToText

    auto = AutoModel if model_type in EMBEDDING_TYPES else AutoModelForImageTextToText
    dtype = torch.float32 if target.dtype_bytes == 4 else torch.bfloat16
    try:
        with torch.device("meta"):
            model = auto.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise Unsupported(f"Cannot build a '{model_type}' model from its config: {exc}") from exc
    # Always split quantisable weights out: the advice compares quantisations on one skeleton.
    return _count(model, fp32_kept=target.dtype_bytes < 4)


# --- resolution ---------------------------------------------------------------------------------


def _resolve(command: PlanMemory, cancelled: Callable[[], bool]) -> ResolvedModel:
    try:
        return resolve_model(command.model)
    except ModelNotFound:
        if not command.fetch_config:
            raise
    from engine.models.download import fetch_small_files

    # Bounded and cancellable: a Hub that never answers must not hold the plan for ever.
    path = fetch_small_files(command.model, endpoint=command.endpoint, cancelled=cancelled)
    return resolve_model(str(path))


def _load_config(resolved: ResolvedModel, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    known = resolved.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    if not (known or resolved.model_type in EMBEDDING_TYPES or trust_remote_code):
        raise Unsupported(
            f"{resolved.name} is a '{resolved.model_type}' model, not an image-text-to-text or "
            "image-embedding model, so it cannot be planned."
        )
    try:
        return AutoConfig.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFound(f"{resolved.name}: config.json cannot be used ({exc}).") from exc


def _target(command: PlanMemory, devices: list[DeviceInfo]) -> Target:
    cuda = next((d for d in devices if d.kind == "cuda"), None)
    cpu = next((d for d in devices if d.kind == "cpu"), None)
    device = command.device
    if device == "auto":
        device = "cuda" if cuda is not None or command.vram_bytes else "cpu"
    quant = command.quant
    if quant == "auto":
        quant = "nf4" if device == "cuda" else "none"
    if quant not in ("nf4", "int8", "none"):
        raise Unsupported(f"Unknown quantisation {quant!r}; choose nf4, int8 or none.")
    chosen = cuda if device == "cuda" else cpu if device == "cpu" else None
    available = command.vram_bytes or (chosen.total_memory if chosen else None)
    if command.vram_bytes:
        name = f"{command.vram_bytes / GIB:.1f} GB given"
    else:
        name = chosen.name if chosen else f"no {device} device detected"
    dtype_bytes, dtype = (4, "float32") if device == "cpu" else (2, "bfloat16")
    if device == "mps":
        dtype = "float16"
    return Target(quant, device, dtype_bytes, dtype, available, name)


# --- counting -----------------------------------------------------------------------------------


def part_of(name: str) -> str:
    """vision / projector / language for a parameter's dotted name (first telling segment wins)."""
    for segment in name.split("."):
        if segment in _VISION_KEYS:
            return "vision"
        if segment in _PROJECTOR_KEYS:
            return "projector"
    return "language"


def _count(model: Any, *, fp32_kept: bool) -> Skeleton:
    import torch

    skeleton = Skeleton()
    skip = _modules_not_converted(model)
    # Modules transformers upcasts to float32 even when the model runs in bf16.
    upcast = sorted(getattr(model, "_keep_in_fp32_modules_strict", None) or []) if fp32_kept else []
    linears = {f"{name}.weight" for name, module in model.named_modules() if _is_linear(module)}
    for name, param in model.named_parameters():
        part = skeleton.part(part_of(name))
        numel = int(param.numel())
        module_name = name.rsplit(".", 1)[0]
        if name in linears and _converts(module_name, skip):
            # bitsandbytes dequantises one such weight at a time for a multi-token forward.
            skeleton.largest_linear = max(skeleton.largest_linear, numel)
            part.quantizable += numel
            part.quantizable_rows += int(param.shape[0])
        elif upcast and not _converts(module_name, upcast):
            part.fp32 += numel
        else:
            part.compute += numel
    skeleton.buffer_bytes = sum(
        int(buffer.numel()) * buffer.element_size()
        for _, buffer in model.named_buffers()
        if buffer.dtype != torch.bool
    )
    try:
        parameters = inspect.signature(model.forward).parameters
        skeleton.keeps_all_logits = "logits_to_keep" not in parameters
    except (TypeError, ValueError):
        skeleton.keeps_all_logits = False
    return skeleton


def _is_linear(module: Any) -> bool:
    import torch

    return type(module) is torch.nn.Linear or type(module).__name__ == "Conv1D"


def _modules_not_converted(model: Any) -> list[str]:
    """transformers' own list: tied/output embeddings, the last module, fp32-kept modules."""
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        keys = list(get_keys_to_not_convert(model))
    except (ImportError, AttributeError, IndexError) as exc:  # an older/newer transformers
        log.info("falling back to lm_head-only skip list: %s", exc)
        keys = ["lm_head"]
    return sorted(set(keys) | set(getattr(model, "_keep_in_fp32_modules", None) or []))


def _converts(module_name: str, patterns: list[str]) -> bool:
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module

        return bool(should_convert_module(module_name, patterns))
    except ImportError:
        return not any(module_name == p or module_name.endswith(f".{p}") for p in patterns)


# --- assembling ---------------------------------------------------------------------------------


def _assemble(
    model: str,
    resolved: ResolvedModel,
    config: Any,
    skeleton: Skeleton,
    target: Target,
    cost: image_tokens.ImageCost,
    shape: Shape,
) -> MemoryPlan:
    parts = skeleton.parts
    weights = skeleton.buffer_bytes + sum(
        part.bytes(target.quant, target.dtype_bytes) for part in parts.values()
    )
    vision = sum(
        parts[name].bytes(target.quant, target.dtype_bytes)
        for name in ("vision", "projector")
        if name in parts
    )
    embedding = resolved.model_type in EMBEDDING_TYPES
    context = 0 if embedding else shape.context
    sequence = cost.prompt_tokens + context
    kv = 0 if embedding else kv_cache_bytes(config, sequence, cost.cross_attention_tokens, target)
    images = shape.images
    activations = _activation_bytes(config, skeleton, target, sequence, cost, images, embedding)
    if (
        target.device == "cuda"
        and target.quant != "none"
        and not embedding
        and quirks_for(resolved.model_type).static_decode
    ):
        # The captured prefills (engine.backends.static_decode) keep a memory pool of their
        # own for as long as the model is loaded: one dequantised weight, and the activations
        # of the longest prefill captured. Those are the eager prefill's, counted once above,
        # as in the allocated peak this plan is measured against (a replay allocates nothing);
        # bench/decode_gpu.py's "held" column shows the pool as well.
        activations += skeleton.largest_linear * target.dtype_bytes
    allocated = weights + kv + activations
    if target.device == "cuda":
        overhead = CUDA_CONTEXT_BYTES + int(allocated * ALLOCATOR_SLACK)
    else:
        overhead = CPU_RUNTIME_BYTES
    total = allocated + overhead
    return MemoryPlan(
        model=model,
        model_type=resolved.model_type,
        quant=target.quant,
        device=target.device,
        dtype=target.dtype,
        image_width=shape.width,
        image_height=shape.height,
        images=images,
        context_tokens=context,
        params_total=sum(part.total for part in parts.values()),
        params_vision=parts.get("vision", PartCount()).total,
        params_projector=parts.get("projector", PartCount()).total,
        params_language=parts.get("language", PartCount()).total,
        params_quantized=sum(part.quantizable for part in parts.values()),
        weights_bytes=weights,
        vision_bytes=vision,
        kv_cache_bytes=kv,
        image_tokens_per_image=cost.image_tokens_per_image,
        sequence_tokens=sequence,
        cross_attention_tokens=cost.cross_attention_tokens,
        activation_bytes=activations,
        allocated_bytes=allocated,
        overhead_bytes=overhead,
        total_bytes=total,
        available_bytes=target.available,
        device_name=target.device_name,
        verdict=fit_verdict(total, target.available),
        notes=_notes(resolved, config),
        needs_consent=_needs_consent(resolved),
    )


def _text_config(config: Any) -> Any:
    try:
        return config.get_text_config(decoder=True)
    except (AttributeError, TypeError):
        return getattr(config, "text_config", None) or config


def _first(holder: Any, *names: str) -> Any:
    for name in names:
        value = getattr(holder, name, None)
        if value:
            return value
    return None


def kv_cache_bytes(config: Any, sequence: int, cross_tokens: int, target: Target) -> int:
    """Keys and values of every layer: self-attention over the sequence, cross-attention over
    vision states (mllama); sliding-window layers keep at most their window."""
    text = _text_config(config)
    layers = int(_first(text, "num_hidden_layers", "num_layers", "n_layer") or 0)
    heads = int(_first(text, "num_attention_heads", "num_heads", "n_head") or 1)
    kv_heads = int(_first(text, "num_key_value_heads") or heads)
    hidden = int(_first(text, "hidden_size", "d_model", "n_embd") or 0)
    head_dim = int(_first(text, "head_dim", "d_kv") or hidden // heads)
    cross = set(getattr(text, "cross_attention_layers", None) or [])
    layer_types = list(getattr(text, "layer_types", None) or [])
    window = getattr(text, "sliding_window", None)
    per_token = 2 * kv_heads * head_dim * target.dtype_bytes
    total = 0
    for index in range(layers):
        if index in cross:
            tokens = cross_tokens
        elif window and index < len(layer_types) and layer_types[index] == "sliding_attention":
            tokens = min(sequence, int(window))
        else:
            tokens = sequence
        total += per_token * tokens
    return total


def _activation_bytes(
    config: Any,
    skeleton: Skeleton,
    target: Target,
    sequence: int,
    cost: image_tokens.ImageCost,
    images: int,
    embedding: bool,
) -> int:
    """The largest transient of one forward pass: a text layer over the whole prompt, or the
    vision tower over every image's patches, plus the dequantised weight of the largest Linear."""
    text = _text_config(config)
    hidden = int(_first(text, "hidden_size", "d_model", "n_embd") or 0)
    inter = int(_first(text, "intermediate_size", "ffn_dim", "d_ff", "n_inner") or 4 * hidden)
    text_peak = sequence * (hidden * ACT_HIDDEN + inter * ACT_INTERMEDIATE) * target.dtype_bytes
    vision_config = getattr(config, "vision_config", None)
    vision_peak = 0
    if vision_config is not None:
        v_hidden = int(_first(vision_config, "hidden_size", "embed_dim", "width") or hidden)
        v_inter = int(
            _first(vision_config, "intermediate_size")
            or v_hidden * float(_first(vision_config, "mlp_ratio") or 4)
        )
        patches = cost.vision_patches_per_image * images
        vision_peak = patches * (v_hidden * ACT_HIDDEN + v_inter * ACT_INTERMEDIATE)
        vision_peak *= target.dtype_bytes
    held = 0 if embedding else sequence * hidden * target.dtype_bytes  # the prompt's embeddings
    logits = 0
    if skeleton.keeps_all_logits and not embedding:
        vocab = int(_first(text, "vocab_size") or 0)
        logits = sequence * vocab * 4
    dequantised = skeleton.largest_linear * target.dtype_bytes if target.quant != "none" else 0
    return int(max(text_peak, vision_peak) + held + logits + dequantised)


def _notes(resolved: ResolvedModel, config: Any) -> list[str]:
    notes = []
    if not any(resolved.path.glob("*.safetensors")) and not _pickles(resolved.path):
        notes.append("Planned from config and processor files alone: no weights are present.")
    if getattr(config, "is_encoder_decoder", False) or getattr(
        _text_config(config), "is_encoder_decoder", False
    ):
        notes.append(
            "Encoder-decoder text model: the encoder's cross-attention cache is not counted."
        )
    return notes


def _pickles(path: Path) -> list[str]:
    return [f.name for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES]


def _needs_consent(resolved: ResolvedModel) -> list[str]:
    needs = []
    if not resolved.has_safetensors and _pickles(resolved.path):
        needs.append("pickle")
    if "auto_map" in resolved.config:
        needs.append("remote_code")
    return needs


# --- advice -------------------------------------------------------------------------------------


def _advice(plan: MemoryPlan, assemble: Any) -> list[str]:
    """Concrete alternatives, each planned for real: lighter quantisation, smaller or fewer
    images, a shorter context; and, when nothing helps, a smaller model."""
    advice: list[str] = []
    size = (plan.image_width, plan.image_height, plan.images, plan.context_tokens)

    def offer(text: str, alternative: MemoryPlan) -> None:
        if alternative.total_bytes < plan.total_bytes and alternative.verdict != "does_not_fit":
            advice.append(f"{text}: about {alternative.total_bytes / GIB:.1f} GB "
                          f"({alternative.verdict.replace('_', ' ')}).")  # fmt: skip

    for lighter in {"none": ("int8", "nf4"), "int8": ("nf4",)}.get(plan.quant, ()):
        offer(f"Quantise to {lighter}", assemble(lighter, *size))
    if plan.images > 1:
        offer("Send one image at a time", assemble(plan.quant, *size[:2], 1, size[3]))
    width, height = plan.image_width, plan.image_height
    if plan.images and max(width, height) > 448:
        scale = 448 / max(width, height)
        small = (max(28, int(width * scale)), max(28, int(height * scale)))
        candidate = assemble(plan.quant, *small, plan.images, size[3])
        if candidate.image_tokens_per_image < plan.image_tokens_per_image:
            offer(f"Use a smaller image budget ({small[0]}x{small[1]})", candidate)
    if plan.context_tokens > 1024:
        offer("Keep conversations shorter (1024 tokens)", assemble(plan.quant, *size[:3], 1024))
    if not advice or plan.verdict == "does_not_fit":
        advice.append("Or choose a smaller model: the catalogue lists picks for each GPU size.")
    return advice


# --- before a load ------------------------------------------------------------------------------


def refuse_if_too_big(
    model: str,
    quant: str,
    device: str,
    devices: list[DeviceInfo],
    trust_remote_code: bool = False,
) -> MemoryPlan | None:
    """Before a load: raise ``OutOfMemory`` with advice if the model cannot fit the device even
    with a short text-only conversation. Returns the plan when one was needed, else None.

    The weights on disk give a quick upper bound first, so a model that clearly fits (every
    small model on a big machine) costs no planning."""
    resolved = resolve_model(model)
    plan_device = device
    if device == "auto":
        plan_device = "cuda" if any(d.kind == "cuda" for d in devices) else "cpu"
    chosen = next((d for d in devices if d.kind == plan_device), None)
    if chosen is None or not chosen.total_memory:
        return None
    if _disk_upper_bound(resolved, plan_device) < chosen.total_memory * 0.5:
        return None
    command = PlanMemory(
        job_id="load-check",
        model=model,
        quant=quant,  # type: ignore[arg-type]
        device=plan_device,  # type: ignore[arg-type]
        images=0,
        context_tokens=512,
        trust_remote_code=trust_remote_code,
    )
    plan = plan_memory(command, devices)
    if plan.verdict == "does_not_fit":
        advice = " ".join(plan.advice)
        raise OutOfMemory(
            f"{model} in {plan.quant} needs about {plan.total_bytes / GIB:.1f} GiB even with a "
            f"short text-only conversation, and {plan.device_name} has "
            f"{chosen.total_memory / GIB:.1f} GiB. {advice}".strip()
        )
    return plan


def _disk_upper_bound(resolved: ResolvedModel, device: str) -> float:
    """Weights on disk, scaled from their stored dtype to the compute dtype of ``device``."""
    stored = str(resolved.config.get("dtype") or resolved.config.get("torch_dtype") or "float32")
    stored_bytes = 4 if "32" in stored else 2
    target_bytes = 4 if device == "cpu" else 2
    size = sum(
        f.stat().st_size
        for f in resolved.path.iterdir()
        if f.suffix == ".safetensors" or f.suffix in PICKLE_SUFFIXES
    )
    return size * target_bytes / stored_bytes
