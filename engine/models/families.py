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
    # Whether the image token must appear literally in a plain prompt (BLIP-2 style has none).
    note: str = ""


GENERIC = Quirks()

FAMILY_QUIRKS: dict[str, Quirks] = {
    "paligemma": Quirks(prompt_format="prefix", note="prefix prompt: the image, then the task"),
    "blip-2": Quirks(prompt_format="plain", note="no chat template: 'Question: … Answer:'"),
    "blip_2": Quirks(prompt_format="plain", note="no chat template: 'Question: … Answer:'"),
    "instructblip": Quirks(prompt_format="plain", note="no chat template"),
    "idefics": Quirks(prompt_format="plain", note="Flamingo-style interleaved prompt"),
}


def quirks_for(model_type: str) -> Quirks:
    return FAMILY_QUIRKS.get(model_type, GENERIC)
