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
    note: str = ""


GENERIC = Quirks()

FAMILY_QUIRKS: dict[str, Quirks] = {
    "paligemma": Quirks(
        prompt_format="prefix", reuse_prefix=False, note="prefix prompt: the image, then the task"
    ),
    "blip-2": Quirks(prompt_format="plain", reuse_prefix=False, note="no chat template"),
    "instructblip": Quirks(prompt_format="plain", reuse_prefix=False, note="no chat template"),
    "idefics": Quirks(
        prompt_format="plain", reuse_prefix=False, note="Flamingo-style gated cross-attention"
    ),
    "mllama": Quirks(reuse_prefix=False, note="image enters through cross-attention layers"),
}


def quirks_for(model_type: str) -> Quirks:
    return FAMILY_QUIRKS.get(model_type, GENERIC)
