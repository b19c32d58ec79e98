"""The recommended-model catalogue for the desktop and the CLI, read without the engine.

The file's shape is the protocol's ``Catalogue``; the engine checks it more deeply in its tests.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from engine.protocol.models import GIB, Catalogue, CatalogueEntry, decode_catalogue

CANDIDATES = (
    Path(__file__).resolve().parents[1] / "resources" / "catalogue.json",  # a checkout
    Path(__file__).resolve().parent / "resources" / "catalogue.json",  # an installed package
)


def catalogue_path() -> Path | None:
    return next((path for path in CANDIDATES if path.is_file()), None)


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The catalogue, or an empty one (with a note saying why) if the file is missing or bad."""
    path = path or catalogue_path()
    if path is None:
        return Catalogue(version=1, models=[], picks={}, note="The model catalogue is missing.")
    try:
        return decode_catalogue(path.read_bytes())
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
        return Catalogue(
            version=1, models=[], picks={}, note=f"The model catalogue cannot be read: {error}"
        )


def group_for(vram_bytes: int | None) -> str:
    """Which list of picks suits a GPU with ``vram_bytes`` (None: no GPU, the CPU)."""
    if not vram_bytes:
        return "cpu"
    if vram_bytes < 7.5 * GIB:
        return "6gb"
    if vram_bytes < 20 * GIB:
        return "8-12gb"
    return "24gb"


def picks(catalogue: Catalogue, group: str) -> list[CatalogueEntry]:
    entries = [catalogue.entry(repo_id) for repo_id in catalogue.picks.get(group, [])]
    return [entry for entry in entries if entry is not None]


def best_quant(entry: CatalogueEntry, vram_bytes: int | None) -> str:
    """The least lossy quantisation whose estimate fits (nf4 when none does)."""
    for quant in ("none", "int8", "nf4"):
        if entry.fit(quant, vram_bytes) == "fits":
            return quant
    return "nf4"
