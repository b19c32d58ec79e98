"""Family quirks in one table: prompt format and image-budget knobs, keyed by ``model_type``.

Anything not listed uses the generic path: the processor's chat template with image parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PromptFormat = Literal["chat_template", "prefix", "plain"]


@dataclass(frozen=True)
class Quirks:
    prompt_format: PromptFormat = "chat_template"
    # kwargs passed to the processor call, e.g. Qwen's pixel budget
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    # Keep the conversation's KV cache for the next turn (engine.backends.prefix_cache); off
    # where the model keeps image state outside the cache (cross-attention) or has no turns.
    reuse_prefix: bool = True
    # Decode with the engine's static-cache loop (engine.backends.static_decode); off where
    # generate() carries more than the KV cache from step to step or has its own generate().
    static_decode: bool = True
    # Multimodal rotary positions (Qwen2-VL family): decode positions carry the images' offset.
    mrope: bool = False
    note: str = ""


GENERIC = Quirks()

FAMILY_QUIRKS: dict[str, Quirks] = {
    "paligemma": Quirks(
        prompt_format="prefix", reuse_prefix=False, note="prefix prompt: the image, then the task"
    ),
    "blip-2": Quirks(
        prompt_format="plain", reuse_prefix=False, static_decode=False, note="no chat template"
    ),
    "instructblip": Quirks(
        prompt_format="plain", reuse_prefix=False, static_decode=False, note="no chat template"
    ),
    "idefics": Quirks(
        prompt_format="plain",
        reuse_prefix=False,
        static_decode=False,
        note="Flamingo-style gated cross-attention",
    ),
    "mllama": Quirks(
        reuse_prefix=False, static_decode=False, note="image enters through cross-attention layers"
    ),
    "qwen2_vl": Quirks(mrope=True),
    "qwen2_5_vl": Quirks(mrope=True),
}


def quirks_for(model_type: str) -> Quirks:
    return FAMILY_QUIRKS.get(model_type, GENERIC)
