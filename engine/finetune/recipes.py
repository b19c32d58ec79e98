"""Recipes and defaults: what is trained, and every value chosen automatically with its reason.

Three recipes follow the usual two-stage VLM training table (plus one for CLIP-style search
models). Defaults come from what the tools people trust ship (rank 16 / alpha 16 / lr 2e-4,
8-bit AdamW, effective batch 8-16, epochs from data size); each resolved value carries a sentence
the wizard shows next to it. peft does the LoRA; nothing here touches weights.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from engine.errors import BadInput, Unsupported
from engine.finetune.parts import ModelParts, find_parts, lora_params
from engine.models.resolve import ResolvedModel, check_remote_code, check_weights, resolve_model
from engine.protocol import finetune as pf
from engine.protocol.wording import counted

EMBEDDING_TYPES = frozenset({"clip", "siglip", "siglip2"})
GIB = 1024**3
# CLIP-LoRA adapts attention in both towers (q, k, v and the output projection).
ATTENTION_LEAVES = frozenset({"q_proj", "k_proj", "v_proj", "out_proj", "qkv"})


@dataclass(frozen=True)
class RecipeInfo:
    title: str
    line: str  # the one-line explanation the wizard shows
    language_lora: bool
    vision_lora: bool
    projector: bool


RECIPES: dict[str, RecipeInfo] = {
    "projector": RecipeInfo(
        "Projector only",
        "Aligns image features with the language model and leaves its language untouched "
        "(stage-1 style): for a new kind of image with simple captions.",
        language_lora=False,
        vision_lora=False,
        projector=True,
    ),
    "language": RecipeInfo(
        "Language LoRA + projector (recommended)",
        "Teaches the model your answers, names and formats while the image encoder stays "
        "frozen (stage-2 style): right for most data.",
        language_lora=True,
        vision_lora=False,
        projector=True,
    ),
    "vision_language": RecipeInfo(
        "Vision LoRA + language LoRA",
        "Also adapts the image encoder, at a 5x lower learning rate: only for images unlike "
        "anything the base model has seen (microscopy, radar, unusual scans).",
        language_lora=True,
        vision_lora=True,
        projector=False,
    ),
    "contrastive": RecipeInfo(
        "Contrastive LoRA (image search)",
        "Pulls your images and their captions together in a CLIP/SigLIP model so that search "
        "finds them by your own words.",
        language_lora=True,
        vision_lora=True,
        projector=False,
    ),
}


@dataclass
class ModelFacts:
    resolved: ResolvedModel
    config: Any
    kind: str  # causal | contrastive
    parts: ModelParts
    meta_model: Any
    total_params: int
    max_positions: int

    @property
    def model_type(self) -> str:
        return self.resolved.model_type


def model_facts(
    model: str, allow_pickle: bool = False, trust_remote_code: bool = False
) -> ModelFacts:
    """Resolve the model, check it may be loaded, and build it on the meta device to count parts."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

    resolved = resolve_model(model)
    check_remote_code(resolved, trust_remote_code)
    check_weights(resolved, allow_pickle)
    kind = "contrastive" if resolved.model_type in EMBEDDING_TYPES else "causal"
    try:
        config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
        auto = AutoModel if kind == "contrastive" else AutoModelForImageTextToText
        with torch.device("meta"):
            meta = auto.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise Unsupported(f"{model} cannot be fine-tuned here: {exc}") from exc
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = int(getattr(text, "max_position_embeddings", 0) or 32768)
    return ModelFacts(
        resolved=resolved,
        config=config,
        kind=kind,
        parts=find_parts(meta),
        meta_model=meta,
        total_params=sum(int(p.numel()) for p in meta.parameters()),
        max_positions=positions,
    )


class Resolver:
    """Turns settings into concrete values, recording why each value was chosen."""

    def __init__(self, settings: pf.FinetuneSettings) -> None:
        self.settings = settings
        self.choices: dict[str, pf.SettingChoice] = {}

    def pick(self, name: str, auto_value: Any, reason: str, user_reason: str = "set by you") -> Any:
        user = getattr(self.settings, name, None)
        if user is not None and user != "auto":
            self.choices[name] = pf.SettingChoice(
                name=name, value=user, reason=user_reason, auto=False
            )
            return user
        self.choices[name] = pf.SettingChoice(name=name, value=auto_value, reason=reason)
        return auto_value

    def note(self, name: str, value: Any, reason: str) -> None:
        self.choices[name] = pf.SettingChoice(name=name, value=value, reason=reason)


def resolve_device(settings: pf.FinetuneSettings) -> tuple[str, int | None, bool]:
    """(device, free bytes on it, bf16 support)."""
    import torch

    from engine.devices import resolve_device as resolve

    device = resolve(settings.device)
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info(0)
        return device, int(free), bool(torch.cuda.is_bf16_supported())
    return device, None, False


def choose(
    facts: ModelFacts,
    settings: pf.FinetuneSettings,
    train_rows: int,
    eval_rows: int,
    longest_tokens: int,
) -> tuple[Resolver, dict[str, Any]]:
    """Every training value, each with its reason; returns the resolver and the plain values."""
    if settings.recipe not in RECIPES:
        raise BadInput(f"Unknown recipe {settings.recipe!r}; choose one of {', '.join(RECIPES)}.")
    if settings.recipe == "contrastive" and facts.kind != "contrastive":
        raise BadInput("The contrastive recipe is for CLIP/SigLIP search models only.")
    if train_rows < 1:
        raise BadInput("No training rows are left; add data or fix the problems listed.")
    device, free, bf16 = resolve_device(settings)
    r = Resolver(settings)
    values: dict[str, Any] = {"device": device}
    recipe = "contrastive" if facts.kind == "contrastive" else settings.recipe
    values["recipe"] = recipe
    r.note(
        "recipe",
        recipe,
        RECIPES[recipe].line
        if recipe == settings.recipe
        else "a search model: its two encoders are tuned together on your image-caption pairs",
    )
    billions = facts.total_params / 1e9
    values["quant"] = r.pick("quant", *_quant_default(facts, device, free, billions))
    if values["quant"] == "nf4" and device != "cuda" and settings.quant == "nf4":
        r.choices["quant"].reason = "set by you: 4-bit on the CPU is slow but works"
    values["dtype"] = "float32" if device == "cpu" else ("bfloat16" if bf16 else "float16")
    r.note("dtype", values["dtype"], _dtype_reason(device, bf16))
    values["rank"] = r.pick("rank", 16, "rank 16: the tested default (Unsloth, LLaMA-Factory)")
    values["alpha"] = r.pick(
        "alpha", values["rank"], "alpha = rank: a scale of 1, which the learning rate assumes"
    )
    values["dropout"] = r.pick("dropout", 0.0, "no dropout: it rarely helps LoRA on small data")
    base_lr = 1e-3 if recipe == "projector" else (1e-4 if recipe == "contrastive" else 2e-4)
    lr_reason = {
        "projector": "1e-3: the projector alone is trained, as in stage-1 alignment",
        "contrastive": "1e-4: contrastive LoRA drifts at higher rates",
    }.get(recipe, "2e-4: the standard LoRA rate for rank 16 / alpha 16")
    values["learning_rate"] = r.pick("learning_rate", base_lr, lr_reason)
    if recipe == "contrastive":
        vision_lr = values["learning_rate"]
        vision_reason = "the image tower at the text tower's rate; set it apart here"
    else:
        vision_lr = values["learning_rate"] / 5
        vision_reason = (
            "5x lower for the image encoder: it was trained on far more images than yours"
        )
    values["vision_learning_rate"] = r.pick("vision_learning_rate", vision_lr, vision_reason)
    batch = 1 if longest_tokens > 1024 or device != "cuda" and longest_tokens > 512 else 2
    if facts.kind == "contrastive":
        batch = min(32, train_rows)
    values["batch_size"] = r.pick("batch_size", batch, _batch_reason(facts, batch, longest_tokens))
    accum, accum_reason = _accumulation(train_rows, facts.kind, values["batch_size"])
    values["grad_accum"] = r.pick("grad_accum", accum, accum_reason)
    epochs, epochs_reason = _epochs(train_rows)
    values["epochs"] = r.pick("epochs", epochs, epochs_reason)
    micro = math.ceil(train_rows / values["batch_size"])
    steps_per_epoch = math.ceil(micro / values["grad_accum"])
    planned = steps_per_epoch * values["epochs"]
    total = min(planned, settings.max_steps) if settings.max_steps else planned
    values["steps_per_epoch"] = steps_per_epoch
    values["total_steps"] = total
    r.note(
        "total_steps",
        total,
        f"{counted(values['epochs'], 'epoch')} x {counted(steps_per_epoch, 'step')}"
        + (
            f", capped at {settings.max_steps} by you"
            if settings.max_steps and total < planned
            else ""
        ),
    )
    values["warmup_ratio"] = r.pick(
        "warmup_ratio", 0.05, "warm-up over 5 % of the steps, then cosine decay"
    )
    values["weight_decay"] = r.pick("weight_decay", 0.0, "no weight decay: LoRA is small already")
    values["max_grad_norm"] = r.pick(
        "max_grad_norm", 1.0, "gradients clipped at norm 1 against spikes"
    )
    optimizer = "adamw_8bit" if device == "cuda" else "adamw"
    values["optimizer"] = r.pick(
        "optimizer",
        optimizer,
        (
            "8-bit AdamW (bitsandbytes): a quarter of the optimiser memory"
            if device == "cuda"
            else "AdamW in 32-bit: 8-bit AdamW needs a CUDA GPU"
        ),
    )
    values["gradient_checkpointing"] = r.pick(
        "gradient_checkpointing",
        device == "cuda",
        "on: recomputes activations, about 30 % slower for most of their memory"
        if device == "cuda"
        else "off: there is no GPU memory to save on the CPU",
    )
    every = max(1, round(total / 10))
    values["eval_every"] = r.pick("eval_every", every, "about ten evaluations over the run")
    values["checkpoint_every"] = r.pick(
        "checkpoint_every", every, "a checkpoint every ~10 % of the run"
    )
    patience = 3 if eval_rows else 0
    values["early_stopping_patience"] = r.pick(
        "early_stopping_patience",
        patience,
        "stop after 3 evaluations without a better held-out loss"
        if eval_rows
        else "off: without held-out rows there is nothing honest to stop on",
    )
    if facts.kind == "contrastive":
        values["max_length"] = r.pick(
            "max_length",
            facts.max_positions,
            f"the text encoder reads {facts.max_positions} tokens; longer captions are cut there",
        )
    else:
        values["max_length"] = r.pick(
            "max_length",
            min(facts.max_positions, longest_tokens),
            f"the longest example, {longest_tokens} tokens with its image tokens: nothing is cut",
        )
    values["image_max_pixels"] = r.pick("image_max_pixels", *image_budget(facts, device, free))
    values["seed"] = settings.seed
    return r, values


def _quant_default(
    facts: ModelFacts, device: str, free: int | None, billions: float
) -> tuple[str, str]:
    if facts.kind == "contrastive":
        return "none", "search models are small: LoRA on a full-precision base"
    if device != "cuda":
        return "none", "full precision: 4-bit saves GPU memory, and there is no GPU"
    bf16_bytes = facts.total_params * 2
    if billions >= 6.0:
        return (
            "nf4",
            f"QLoRA: a {billions:.1f} B model in 4-bit NF4 (bf16 compute) fits consumer GPUs",
        )
    if free is not None and bf16_bytes * 1.6 > free:
        return (
            "nf4",
            f"QLoRA: the bf16 base ({bf16_bytes / GIB:.1f} GB) would not fit next to training",
        )
    return (
        "none",
        f"LoRA on a bf16 base: 4-bit visibly hurts small ({billions:.1f} B) vision models",
    )


def _dtype_reason(device: str, bf16: bool) -> str:
    if device == "cpu":
        return "float32 on the CPU"
    return "bfloat16 compute" if bf16 else "float16: this GPU has no bfloat16 (T4, RTX 20 series)"


def _batch_reason(facts: ModelFacts, batch: int, longest: int) -> str:
    if facts.kind == "contrastive":
        return "contrastive pairs need many negatives per batch: up to 32"
    return f"{batch} per step: the longest example has {longest} tokens, and image tokens decide memory"


def _accumulation(rows: int, kind: str, batch: int) -> tuple[int, str]:
    """Micro-batches per optimiser step, and why: an effective batch of 8 (16 from 1,000 rows),
    a quarter of the rows for a handful of them, never below one micro-batch."""
    if kind == "contrastive":
        return 1, "no accumulation: negatives only come from the same batch"
    target = (16 if rows >= 1000 else 8) if rows >= 64 else max(1, rows // 4)
    accum = max(1, target // batch)
    if rows >= 64:
        return accum, f"gradients accumulated to an effective batch of {accum * batch}"
    return accum, f"effective batch of {accum * batch}: a small dataset needs more, smaller updates"


def _epochs(rows: int) -> tuple[int, str]:
    if rows < 1000:
        return 3, f"3 epochs: {rows} rows is a small dataset"
    if rows < 5000:
        return 2, f"2 epochs for {rows} rows"
    return 1, f"1 epoch: {rows} rows is enough to learn from once"


def image_budget(facts: ModelFacts, device: str, free: int | None) -> tuple[int | None, str]:
    if facts.model_type not in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        return None, "this model resizes images to a fixed size itself"
    if device != "cuda":
        return None, "the processor's own budget"
    if free is not None and free <= 12 * GIB:
        return 512 * 512, "512x512 pixels (~334 image tokens): fits a 12 GB GPU"
    return 768 * 768, "768x768 pixels (~752 image tokens) for a GPU with more than 12 GB free"


def targets(facts: ModelFacts, recipe: str) -> tuple[str, list[str], list[str]]:
    """(LoRA target regex, modules to train fully, vision prefixes) for a recipe."""
    info = RECIPES[recipe]
    if recipe == "contrastive":
        names = [
            name
            for part in ("language", "vision")
            for name in facts.parts.linears.get(part, [])
            if name.rsplit(".", 1)[-1] in ATTENTION_LEAVES
        ]
        vision_roots = list(facts.parts.roots.get("vision", []))
        return "|".join(re.escape(name) for name in sorted(names)), [], vision_roots
    parts: list[str] = []
    if info.language_lora:
        parts.append("language")
    if info.vision_lora:
        parts.append("vision")
    regex = facts.parts.target_regex(tuple(parts)) if parts else ""
    modules_to_save = list(facts.parts.roots.get("projector", [])) if info.projector else []
    if info.projector and not modules_to_save:
        raise Unsupported(
            "This model has no projector the recipe could train; choose another recipe."
        )
    vision = list(facts.parts.roots.get("vision", []))
    return regex, modules_to_save, vision


def trainable_counts(facts: ModelFacts, recipe: str, rank: int) -> dict[str, int]:
    """Parameters trained per part (LoRA matrices and fully trained modules)."""
    info = RECIPES[recipe]
    counts = {"language": 0, "vision": 0, "projector": 0}
    if recipe == "contrastive":
        regex = targets(facts, recipe)[0]
        for part in ("language", "vision"):
            names = facts.parts.linears.get(part, [])
            part_regex = "|".join(re.escape(n) for n in names if re.fullmatch(regex, n))
            counts[part] = lora_params(facts.meta_model, part_regex, rank) if part_regex else 0
        return counts
    if info.language_lora:
        counts["language"] = lora_params(
            facts.meta_model, facts.parts.target_regex(("language",)), rank
        )
    if info.vision_lora and facts.parts.linears.get("vision"):
        counts["vision"] = lora_params(
            facts.meta_model, facts.parts.target_regex(("vision",)), rank
        )
    if info.projector:
        counts["projector"] = facts.parts.params.get("projector", 0)
    return counts
