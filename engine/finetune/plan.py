"""The plan before training: data checked, tokens counted by the real processor, every setting
resolved with its reason, and the memory the run needs (model, adapter, optimiser, activations at
the chosen batch and the longest example) against the device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.finetune import recipes
from engine.finetune.collate import Supervisor, stop_token_ids
from engine.finetune.data import read_folder
from engine.finetune.validate import Inspection, inspect
from engine.protocol import finetune as pf

log = logging.getLogger(__name__)

MIB = 1024**2
GIB = 1024**3
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes + double-quantised scales
CUDA_CONTEXT_BYTES = 600 * MIB
CPU_RUNTIME_BYTES = 1 * GIB
# Activations kept for the backward pass, per token and decoder layer, in units of the hidden and
# intermediate sizes (attention inputs, norms, MLP gate/up/product); the logits are counted apart.
ACT_HIDDEN = 10
ACT_INTERMEDIATE = 3

Progress = Callable[[str], None]


@dataclass
class PlanContext:
    """Everything the plan found, kept for writing the run folder."""

    facts: recipes.ModelFacts
    processor: Any
    inspection: Inspection
    supervisor: Supervisor | None
    values: dict[str, Any]
    regex: str
    modules_to_save: list[str]
    vision_prefixes: list[str]
    plan: pf.FinetunePlan
    skipped_rows: set[int] = field(default_factory=set)


def build_plan(
    model: str,
    data: str,
    settings: pf.FinetuneSettings,
    progress: Progress = lambda _m: None,
    on_inspection: Callable[[Inspection], None] = lambda _i: None,
) -> PlanContext:
    """``on_inspection`` hears the data check before anything can refuse it, so that a caller can
    list every problem (the refusal names only the first few)."""
    from transformers import AutoProcessor

    progress(f"Reading {model}")
    facts = recipes.model_facts(model, settings.allow_pickle, settings.trust_remote_code)
    progress(f"Checking the data in {data}")
    inspection = inspect(read_folder(data, settings.caption_prompt), settings.fixes, settings.seed)
    on_inspection(inspection)
    if inspection.blocking:
        first = inspection.blocking[:3]
        raise BadInput(
            f"{len(inspection.blocking)} rows cannot be trained on: "
            + "; ".join(issue.message for issue in first)
            + ". Apply the fixes (they drop those rows) or correct the files."
        )
    processor = AutoProcessor.from_pretrained(
        facts.resolved.path, trust_remote_code=settings.trust_remote_code
    )
    device, free, _ = recipes.resolve_device(settings)
    budget = settings.image_max_pixels
    if budget is None:
        budget = recipes.image_budget(facts, device, free)[0]
    supervisor = None
    skipped: list[pf.DatasetIssue] = []
    lengths: dict[int, tuple[int, int]] = {}
    if facts.kind == "causal":
        supervisor = Supervisor(
            processor,
            facts.config,
            stop_token_ids(str(facts.resolved.path), facts.config, processor.tokenizer),
            budget,
        )
        limit = settings.max_length or facts.max_positions
        progress(f"Counting tokens of {len(inspection.kept)} rows with the model's processor")
        for index in [*inspection.train, *inspection.eval]:
            example = inspection.kept[index]
            try:
                item = supervisor.encode(example, index)
            except (BadInput, ValueError) as exc:  # the processor refused this row
                message = exc.message if isinstance(exc, BadInput) else str(exc)
                skipped.append(
                    pf.DatasetIssue(
                        kind="unreadable_image",
                        message=f"{example.source}: the model's processor cannot use it ({message})",
                        row=index,
                    )
                )
                continue
            if item.length > limit:
                skipped.append(
                    pf.DatasetIssue(
                        kind="too_long",
                        message=(
                            f"{example.source}: {item.length} tokens ({item.image_tokens} of them "
                            f"image tokens) is longer than the {limit}-token limit; left out "
                            "rather than cut through its image"
                        ),
                        row=index,
                    )
                )
                continue
            lengths[index] = (item.length, item.image_tokens)
    skipped_rows = {issue.row for issue in skipped if issue.row is not None}
    train_rows = [i for i in inspection.train if i not in skipped_rows]
    eval_rows = [i for i in inspection.eval if i not in skipped_rows]
    # A search model's captions are cut at its text encoder's length (77 for CLIP, 64 for SigLIP).
    longest = max(lengths.values(), default=(min(77, facts.max_positions), 0))
    resolver, values = recipes.choose(facts, settings, len(train_rows), len(eval_rows), longest[0])
    regex, modules_to_save, vision = recipes.targets(facts, values["recipe"])
    trainable = recipes.trainable_counts(facts, values["recipe"], values["rank"])
    memory, total = estimate_memory(facts, values, sum(trainable.values()), longest[0], longest[1])
    available = _available(values["device"], free)
    verdict, advice = _verdict(total, available, values)
    lengths_only = [length for length, _ in lengths.values()]
    preview: list[pf.TokenSpan] = []
    if supervisor is not None and train_rows:
        preview = supervisor.token_view(inspection.kept[train_rows[0]])
    plan = pf.FinetunePlan(
        model=model,
        family=facts.model_type,
        recipe=values["recipe"],
        recipe_summary=recipes.RECIPES[values["recipe"]].line,
        settings=list(resolver.choices.values()),
        trainable=trainable,
        targets=[regex, *modules_to_save] if regex else modules_to_save,
        memory=memory,
        total_bytes=total,
        available_bytes=available,
        verdict=verdict,
        advice=advice,
        train_rows=len(train_rows),
        eval_rows=len(eval_rows),
        skipped_rows=skipped,
        longest_tokens=longest[0],
        longest_image_tokens=longest[1],
        mean_tokens=sum(lengths_only) / len(lengths_only) if lengths_only else 0.0,
        steps_per_epoch=values["steps_per_epoch"],
        total_steps=values["total_steps"],
        preview=preview,
        warnings=_warnings(facts, values, inspection, supervisor),
    )
    return PlanContext(
        facts,
        processor,
        inspection,
        supervisor,
        values,
        regex,
        modules_to_save,
        vision,
        plan,
        skipped_rows,
    )


# --- memory -----------------------------------------------------------------------------------


def _activations(config: Any, tokens: int, checkpointing: bool, dtype_bytes: int) -> int:
    """What one transformer stack keeps for the backward pass over ``tokens`` positions."""
    hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "projection_dim", 512))
    layers = int(getattr(config, "num_hidden_layers", 0) or 12)
    inter = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    per_layer = tokens * (ACT_HIDDEN * hidden + ACT_INTERMEDIATE * inter) * dtype_bytes
    if checkpointing:  # each layer's input, and one layer's insides while it is recomputed
        return layers * tokens * hidden * dtype_bytes + per_layer
    return layers * per_layer


def estimate_memory(
    facts: recipes.ModelFacts,
    values: dict[str, Any],
    trainable: int,
    longest: int,
    image_tokens: int,
) -> tuple[list[pf.MemoryItem], int]:
    dtype_bytes = 4 if values["dtype"] == "float32" else 2
    quantised = 0
    if values["quant"] == "nf4":
        quantised = _linear_params(facts.meta_model, facts.parts.linears.get("language", []))
    weights = int(quantised * NF4_BYTES_PER_PARAM + (facts.total_params - quantised) * dtype_bytes)
    optimiser_bytes = 2 if values["optimizer"] == "adamw_8bit" else 8
    text = (
        facts.config.get_text_config() if hasattr(facts.config, "get_text_config") else facts.config
    )
    vocab = int(getattr(text, "vocab_size", 0) or 32000)
    batch, checkpointing = values["batch_size"], values["gradient_checkpointing"]
    tokens = batch * max(1, longest)
    activations = _activations(text, tokens, checkpointing, dtype_bytes)
    shape = f"batch {batch} x {longest} tokens ({image_tokens} image tokens in the longest example)"
    logits = tokens * vocab * (dtype_bytes + 8)
    logits_note = "the vocabulary scores of every token, for the loss"
    if facts.kind == "contrastive":  # both towers learn: the pictures' patches count too
        vision = facts.config.vision_config
        patches = (int(vision.image_size) // int(vision.patch_size)) ** 2 + 1
        activations += _activations(vision, batch * patches, checkpointing, dtype_bytes)
        shape = f"batch {batch} x {longest} caption tokens and {patches} image patches"
        logits, logits_note = 0, "none: the loss compares whole captions with whole pictures"
    act_note = (
        "layer inputs kept, one layer recomputed at a time (gradient checkpointing)"
        if checkpointing
        else "every layer's activations kept for the backward pass"
    )
    runtime = CUDA_CONTEXT_BYTES if values["device"] == "cuda" else CPU_RUNTIME_BYTES
    items = [
        pf.MemoryItem(
            "weights",
            weights,
            f"{facts.total_params / 1e9:.2f} B parameters, "
            + ("language model in 4-bit NF4" if quantised else values["dtype"]),
        ),
        pf.MemoryItem(
            "adapter", trainable * 4, f"{trainable / 1e6:.1f} M trained parameters in float32"
        ),
        pf.MemoryItem("gradients", trainable * 4, "one float32 gradient per trained parameter"),
        pf.MemoryItem("optimiser", trainable * optimiser_bytes, values["optimizer"]),
        pf.MemoryItem("activations", int(activations), f"{shape}; {act_note}"),
        pf.MemoryItem("logits", int(logits), logits_note),
        pf.MemoryItem(
            "runtime",
            runtime,
            "CUDA context and workspace"
            if values["device"] == "cuda"
            else "Python, torch and the libraries",
        ),
    ]
    total = int(sum(item.bytes for item in items) * 1.05)  # allocator slack
    return items, total


def _linear_params(model: Any, names: list[str]) -> int:
    modules = dict(model.named_modules())
    return sum(int(modules[name].weight.numel()) for name in names if name in modules)


def _available(device: str, free: int | None) -> int | None:
    if device == "cuda":
        return free
    from engine.devices import _host_memory

    return _host_memory()[1]


def _verdict(total: int, available: int | None, values: dict[str, Any]) -> tuple[Any, list[str]]:
    if available is None:
        return "unknown", []
    if total <= 0.85 * available:
        return "fits", []
    advice = []
    if values["batch_size"] > 1:
        advice.append("Use batch size 1 (accumulation keeps the effective batch).")
    if values.get("image_max_pixels") and values["image_max_pixels"] > 512 * 512:
        advice.append("Lower the image budget to 512x512 pixels.")
    if not values["gradient_checkpointing"] and values["device"] == "cuda":
        advice.append("Turn gradient checkpointing on.")
    if values["quant"] != "nf4" and values["device"] == "cuda":
        advice.append("Use QLoRA (a 4-bit NF4 base).")
    advice.append("Shorten the longest examples (fewer or smaller images) or pick a smaller model.")
    return ("tight" if total <= available else "does_not_fit"), advice


def _warnings(
    facts: recipes.ModelFacts,
    values: dict[str, Any],
    inspection: Inspection,
    supervisor: Supervisor | None,
) -> list[str]:
    found = []
    if values["device"] == "cpu":
        found.append(
            "No CUDA GPU: training runs on the CPU, which is only practical for tiny models."
        )
    if not inspection.eval:
        found.append(inspection.split_reason)
    if inspection.fixed:
        fixes = ", ".join(
            f"{kind.replace('_', ' ')} x{count}" for kind, count in inspection.fixed.items()
        )
        found.append(f"Fixed in the data (your files are unchanged): {fixes}.")
    if supervisor is not None:
        found.extend(supervisor.warnings()[:5])
    return list(dict.fromkeys(found))[:10]


def run_dir_ready(path: Path) -> None:
    if path.exists() and any(path.iterdir()):
        raise BadInput(f"{path} is not empty; choose a new folder for the run (or resume it).")
