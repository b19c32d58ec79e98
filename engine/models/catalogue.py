"""The catalogue of recommended models (``resources/catalogue.json``): load and check it.

The file's shape is declared once, in ``engine.protocol.models.Catalogue``, so the desktop
decodes the same file with the same types; this module adds the checks that need transformers
(every family is one it can load, every pick is listed).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from engine.protocol.models import Catalogue, decode_catalogue

CATALOGUE_PATH = Path(__file__).resolve().parents[2] / "resources" / "catalogue.json"
PICK_GROUPS = ("cpu", "6gb", "8-12gb", "24gb", "embeddings")
QUANTS = ("nf4", "int8", "none")
USES = frozenset({"documents", "charts", "chat", "ocr", "captions", "search"})


class CatalogueError(ValueError):
    """The catalogue file is missing or malformed; the message says where."""


def load_catalogue(path: Path = CATALOGUE_PATH) -> Catalogue:
    try:
        return decode_catalogue(path.read_bytes())
    except OSError as exc:
        raise CatalogueError(f"Cannot read the model catalogue {path}: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise CatalogueError(f"The model catalogue {path} is malformed: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise CatalogueError(f"The model catalogue {path} is not valid JSON: {exc}") from exc


def problems(catalogue: Catalogue) -> list[str]:
    """Everything wrong with a catalogue that its types cannot say (empty when it is sound)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    from engine.models.planner import EMBEDDING_TYPES

    found: list[str] = []
    ids = [entry.repo_id for entry in catalogue.models]
    for repo_id in sorted({i for i in ids if ids.count(i) > 1}):
        found.append(f"{repo_id} is listed twice")
    for entry in catalogue.models:
        where = entry.repo_id
        if entry.repo_id.count("/") != 1:
            found.append(f"{where}: not an owner/name repo id")
        if entry.family not in CONFIG_MAPPING_NAMES:
            found.append(f"{where}: transformers has no model type {entry.family!r}")
        if (entry.kind == "embedding") != (entry.family in EMBEDDING_TYPES):
            found.append(f"{where}: kind {entry.kind!r} does not match family {entry.family!r}")
        if set(entry.min_vram_gb) != set(QUANTS):
            found.append(f"{where}: min_vram_gb needs exactly {', '.join(QUANTS)}")
        elif not entry.min_vram_gb["nf4"] <= entry.min_vram_gb["int8"] <= entry.min_vram_gb["none"]:
            found.append(f"{where}: min_vram_gb must grow from nf4 to int8 to none")
        if unknown := set(entry.good_at) - USES:
            found.append(f"{where}: unknown uses {sorted(unknown)}")
        if entry.params_b <= 0 or entry.cpu_ram_gb <= 0:
            found.append(f"{where}: sizes must be positive")
    for group in PICK_GROUPS:
        if not catalogue.picks.get(group):
            found.append(f"picks: no models for {group!r}")
    for group, repo_ids in catalogue.picks.items():
        for repo_id in repo_ids:
            if repo_id not in ids:
                found.append(f"picks[{group}]: {repo_id} is not in the catalogue")
    return found
