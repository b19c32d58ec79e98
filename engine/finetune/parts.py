"""Which modules are vision tower, projector and language model, resolved by module path.

LoRA targets are built from these paths, never from bare layer names: ``q_proj`` or
``gate_proj`` also exist in SigLIP towers, Qwen2.5-VL's vision blocks and Idefics2's perceiver,
and an adapter that lands there by accident changes what the model sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

VISION_KEYS = frozenset(
    {"vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder", "vision_embed"}
)
# Checked before the vision keys: Qwen2-VL's projector lives at ``model.visual.merger``.
PROJECTOR_KEYS = frozenset(
    {
        "multi_modal_projector",
        "mm_projector",
        "merger",
        "connector",
        "qformer",
        "language_projection",
        "perceiver_resampler",
        "mlp1",
    }
)
OUTPUT_KEYS = frozenset({"lm_head", "embed_out", "output"})


def part_of(name: str) -> str:
    """``vision`` / ``projector`` / ``language`` / ``output`` for a dotted module name."""
    segments = name.split(".")
    if segments[-1] in OUTPUT_KEYS and len(segments) <= 2:
        return "output"
    if any(segment in PROJECTOR_KEYS for segment in segments):
        return "projector"
    if any(segment in VISION_KEYS for segment in segments):
        return "vision"
    return "language"


@dataclass
class ModelParts:
    """The linear layers of each part, their roots, and the LoRA target patterns built from them."""

    linears: dict[str, list[str]] = field(default_factory=dict)  # part -> module names
    roots: dict[str, list[str]] = field(default_factory=dict)  # part -> outermost module names
    params: dict[str, int] = field(default_factory=dict)  # part -> parameter count

    def target_regex(self, parts: tuple[str, ...]) -> str:
        """One regex (peft full-matches it against module names) covering exactly these parts."""
        patterns = [_pattern_for(self.linears.get(part, [])) for part in parts]
        patterns = [pattern for pattern in patterns if pattern]
        if not patterns:
            raise ValueError(f"the model has no linear layers in {', '.join(parts)}")
        regex = "|".join(f"(?:{pattern})" for pattern in patterns)
        wanted = {name for part in parts for name in self.linears.get(part, [])}
        everything = {name for names in self.linears.values() for name in names}
        matched = {name for name in everything if re.fullmatch(regex, name)}
        if matched != wanted:  # a pattern reached into another part: list the names instead
            regex = "|".join(re.escape(name) for name in sorted(wanted))
        return regex

    def skip_quantization(self) -> list[str]:
        """Modules kept in bf16 under a 4-bit base: vision tower, projector, output head."""
        return sorted(
            {
                *self.roots.get("vision", []),
                *self.roots.get("projector", []),
                *self.roots.get("output", []),
            }
        )


def find_parts(model: Any) -> ModelParts:
    """Classify the model's modules (a meta-device model is enough)."""
    import torch

    parts = ModelParts()
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if not name:
            continue
        part = part_of(name)
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if part_of(parent) != part or not parent:
            parts.roots.setdefault(part, []).append(name)
        if _is_linear(module, torch):
            parts.linears.setdefault(part, []).append(name)
    for name, param in model.named_parameters():
        part = part_of(name.rsplit(".", 1)[0])
        parts.params[part] = parts.params.get(part, 0) + int(param.numel())
    # The language part's roots are whole models (text_model, language_model): keep only real ones.
    parts.roots["language"] = [r for r in parts.roots.get("language", []) if r.count(".") <= 1]
    parts.roots["output"] = [r for r in parts.roots.get("output", []) if r in modules]
    return parts


def lora_params(model: Any, regex: str, rank: int) -> int:
    """Parameters a LoRA of ``rank`` adds on the modules matched by ``regex``."""
    import torch

    total = 0
    for name, module in model.named_modules():
        if _is_linear(module, torch) and re.fullmatch(regex, name):
            total += rank * (int(module.in_features) + int(module.out_features))
    return total


def _pattern_for(names: list[str]) -> str:
    """``prefix\\.(…\\.)?(leaf1|leaf2)`` from the common prefix of ``names`` and their last parts."""
    if not names:
        return ""
    split = [name.split(".") for name in names]
    prefix: list[str] = []
    for segments in zip(*split, strict=False):
        if len(set(segments)) != 1:
            break
        prefix.append(segments[0])
    prefix = prefix[: min(len(s) for s in split) - 1]
    leaves = sorted({segments[-1] for segments in split})
    head = re.escape(".".join(prefix)) + r"\." if prefix else ""
    return head + r"(?:.*\.)?(?:" + "|".join(re.escape(leaf) for leaf in leaves) + ")"


def _is_linear(module: Any, torch: Any) -> bool:
    if isinstance(module, torch.nn.Linear):
        return True
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")
