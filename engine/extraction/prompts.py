"""The prompts of the two passes, and their version (a hash, so any edit changes it)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

TRANSCRIBE = (
    "Transcribe everything on this page in reading order, as Markdown. Write tables as "
    "Markdown tables and keep every number exactly as printed. For a chart, first name its "
    "type, title, axes, units and legend, then list the values you can read. Do not add "
    "anything that is not on the page."
)

EXTRACT = (
    "Extract the data on this page as JSON that conforms to this JSON Schema:\n{schema}\n"
    "Copy values exactly as printed; write numbers as plain JSON numbers (no currency signs or "
    "thousands separators). Use null for a value that is not on the page. Answer with the JSON "
    "only."
)

TILES = "The page is shown in {count} overlapping parts, from the {start} to the {end}."
TEXT_LAYER = "The page's embedded text (may be incomplete or out of order):\n{text}"
TRANSCRIPTION = "A transcription of the page:\n{text}"

# Long pages carry long texts; the prompt keeps their start (the part models attend to best).
MAX_CONTEXT_CHARS = 6000

PROMPT_VERSION = hashlib.sha256(
    "\x00".join([TRANSCRIBE, EXTRACT, TILES, TEXT_LAYER, TRANSCRIPTION]).encode()
).hexdigest()[:12]


def schema_for_prompt(schema: dict[str, Any]) -> str:
    """Compact JSON: the model reads the same schema the grammar enforces."""
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))


def extraction_prompt(
    schema: dict[str, Any],
    *,
    tiles: int = 1,
    portrait: bool = True,
    transcription: str | None = None,
    text_layer: str | None = None,
) -> str:
    parts = [EXTRACT.format(schema=schema_for_prompt(schema))]
    if tiles > 1:
        parts.append(tiles_note(tiles, portrait))
    if transcription:
        parts.append(TRANSCRIPTION.format(text=_clip(transcription)))
    if text_layer:
        parts.append(TEXT_LAYER.format(text=_clip(text_layer)))
    return "\n\n".join(parts)


def transcription_prompt(*, tiles: int = 1, portrait: bool = True) -> str:
    return TRANSCRIBE if tiles == 1 else f"{TRANSCRIBE}\n\n{tiles_note(tiles, portrait)}"


def tiles_note(count: int, portrait: bool) -> str:
    start, end = ("top", "bottom") if portrait else ("left", "right")
    return TILES.format(count=count, start=start, end=end)


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_CONTEXT_CHARS else text[:MAX_CONTEXT_CHARS] + " …"
