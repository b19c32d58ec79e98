"""A synthetic extraction test set with exact ground truth, generated offline from one seed.

``generate(folder, seed, counts)`` writes charts (matplotlib), invoices and receipts (fpdf2, in
several number and date formats) and tables with merged cells, each as a native PDF or image,
rasterised at one of several DPI, or as a simulated scan (rotation, noise, blur, JPEG), plus
``manifest.json`` with every item's file, schema, ground truth and variant. The files and the
truth come from the same seeded random choices, so the same seed gives the same set.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("chart", "invoice", "receipt", "table")
SCHEMAS = {"chart": "chart", "invoice": "invoice", "receipt": "receipt", "table": "table"}
# How a document reaches the model: its own file, rasterised at a DPI, or as a scan.
RENDERINGS = ("native", "png-72", "png-100", "png-150", "scan-150", "png-200")


@dataclass
class Item:
    id: str
    kind: str
    schema: str
    file: str  # relative to the manifest's folder
    truth: dict[str, Any]
    variant: dict[str, Any] = field(default_factory=dict)  # format, scale, rendering, spans…
    pages: int = 1


def generate(folder: Path, seed: int = 0, counts: dict[str, int] | None = None) -> list[Item]:
    """Write the set into ``folder`` and return its items (also in ``folder/manifest.json``)."""
    from bench.eval_data import charts, documents, scans, tables

    folder.mkdir(parents=True, exist_ok=True)
    counts = counts or {kind: 4 for kind in KINDS}
    makers = {
        "chart": charts.make_chart,
        "invoice": documents.make_invoice,
        "receipt": documents.make_receipt,
        "table": tables.make_table,
    }
    items: list[Item] = []
    for kind in KINDS:
        for index in range(counts.get(kind, 0)):
            rng = random.Random(f"{seed}:{kind}:{index}")  # stable whatever else is generated
            item_id = f"{kind}-{index:03d}"
            rendering = RENDERINGS[(index + seed + KINDS.index(kind)) % len(RENDERINGS)]
            source, truth, variant = makers[kind](rng, folder / f"{item_id}-source", index)
            variant["rendering"] = rendering
            final = scans.deliver(source, folder / item_id, rendering, rng)
            items.append(Item(item_id, kind, SCHEMAS[kind], final.name, truth, variant, pages=1))
            source.unlink(missing_ok=True)  # rasterised: only the delivered file stays
    manifest = {"seed": seed, "counts": counts, "items": [asdict(item) for item in items]}
    (folder / "manifest.json").write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8"
    )
    return items


def load(folder: Path) -> list[Item]:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return [Item(**entry) for entry in manifest["items"]]
