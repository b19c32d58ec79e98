"""Models on this machine: the Hugging Face cache and known folders; delete; import a folder.

Only what VisionDesk can use is listed: image-text-to-text models and CLIP/SigLIP-style
embedding models. A repo whose weights are not all present (a download that stopped, or only
the config files the planner fetched) is listed as incomplete, so it can be resumed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import BadInput, EngineError, ModelNotFound, Unsupported
from engine.models.resolve import PICKLE_SUFFIXES
from engine.protocol.models import InstalledModel, ModelsErrorCode

log = logging.getLogger(__name__)

DEMO_FILE = "visiondesk_demo.json"  # written next to a make-demo model (engine.testing)
COPY_CHUNK = 4 * 1024 * 1024


# --- listing ------------------------------------------------------------------------------------


def list_installed(folders: list[str], cache_dir: str | None = None) -> list[InstalledModel]:
    """Folders first (in the order given), then cache repos by name."""
    found: list[InstalledModel] = []
    for folder in folders:
        entry = describe_folder(Path(folder), model=folder, source="folder")
        if entry is not None:
            found.append(entry)
    found.extend(sorted(_cache_models(cache_dir), key=lambda entry: entry.model.lower()))
    return found


def describe_folder(
    path: Path, *, model: str, source: str, revision: str = "", size: int | None = None
) -> InstalledModel | None:
    """An entry for a model folder, or None if it is not a model VisionDesk can run."""
    config = _read_config(path)
    if config is None:
        return None
    model_type = str(config.get("model_type", ""))
    kind = model_kind(model_type, config)
    if kind is None:
        return None
    needs = []
    if pickle_only(path):
        needs.append("pickle")
    if "auto_map" in config:
        needs.append("remote_code")
    return InstalledModel(
        model=model,
        source=source,  # type: ignore[arg-type]
        path=str(path),
        model_type=model_type,
        kind=kind,
        size_bytes=folder_size(path) if size is None else size,
        complete=weights_complete(path),
        revision=revision,
        needs_consent=needs,
        is_demo=(path / DEMO_FILE).is_file(),
    )


def check_usable(name: str, config: dict[str, Any], consequence: str) -> str:
    """The model's kind ("vlm" or "embedding"); ``Unsupported`` for a model VisionDesk would
    neither list nor run (a text-only one, say), ending with ``consequence``."""
    model_type = str(config.get("model_type", ""))
    kind = model_kind(model_type, config)
    if kind is None:
        what = f"is a '{model_type}' model" if model_type else "names no model_type in its config"
        raise Unsupported(
            f"{name} {what}, not an image-text-to-text or CLIP/SigLIP model, so VisionDesk "
            f"cannot use it; {consequence}."
        )
    return str(kind)


def model_kind(model_type: str, config: dict[str, Any]) -> Any:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    from engine.models.planner import EMBEDDING_TYPES

    if model_type in EMBEDDING_TYPES:
        return "embedding"
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return "vlm"
    auto_map = config.get("auto_map") or {}
    if "AutoModelForImageTextToText" in auto_map or "AutoModelForVision2Seq" in auto_map:
        return "vlm"
    return None


def weights_complete(path: Path) -> bool:
    """Every shard named by the index is present (a symlink into the cache must resolve)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError):
                return False
            return all((path / shard).is_file() for shard in shards)
    return any(
        f.is_file() and (f.suffix == ".safetensors" or f.suffix in PICKLE_SUFFIXES)
        for f in path.iterdir()
    )


def pickle_only(path: Path) -> bool:
    names = [f.name for f in path.iterdir()]
    has_safetensors = any(name.endswith(".safetensors") for name in names)
    return not has_safetensors and any(Path(name).suffix in PICKLE_SUFFIXES for name in names)


def folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size  # follows cache symlinks
            except OSError:
                pass
    return total


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _cache_models(cache_dir: str | None) -> list[InstalledModel]:
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache_dir)
    except Exception as exc:  # no cache yet, or an unreadable one: nothing installed there
        log.info("no Hugging Face cache to list: %s", exc)
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = _current_revision(repo)
        entry = describe_folder(
            Path(revision.snapshot_path),
            model=repo.repo_id,
            source="hf-cache",
            revision=revision.commit_hash,
            size=repo.size_on_disk,
        )
        if entry is not None:
            found.append(entry)
    return found


def _current_revision(repo: Any) -> Any:
    """The revision ``main`` points at, else the most recently modified one."""
    for revision in repo.revisions:
        if "main" in revision.refs:
            return revision
    return max(repo.revisions, key=lambda revision: revision.last_modified)


# --- deleting -----------------------------------------------------------------------------------


def delete_model(model: str, cache_dir: str | None, managed_root: str | None) -> dict[str, Any]:
    """A cache repo (every revision), or a folder inside ``managed_root``; nothing else."""
    path = Path(model).expanduser()
    if path.is_dir():
        return _delete_folder(path, managed_root)
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache_dir)
    except Exception as exc:
        raise ModelNotFound(f"{model} is not in the Hugging Face cache ({exc}).") from exc
    repo = next((r for r in info.repos if r.repo_type == "model" and r.repo_id == model), None)
    if repo is None:
        raise ModelNotFound(f"{model} is not in the Hugging Face cache.")
    strategy = info.delete_revisions(*[revision.commit_hash for revision in repo.revisions])
    strategy.execute()
    if Path(repo.repo_path).exists():  # refs or partial blobs without a revision
        shutil.rmtree(repo.repo_path, ignore_errors=True)
    return {"deleted": model, "freed_bytes": int(repo.size_on_disk)}


def _delete_folder(path: Path, managed_root: str | None) -> dict[str, Any]:
    resolved = path.resolve()
    root = Path(managed_root).expanduser().resolve() if managed_root else None
    if root is None or resolved == root or not resolved.is_relative_to(root):
        raise BadInput(
            f"{path} is a folder VisionDesk did not import, so it is not deleted; remove it "
            "from the list instead, or delete it yourself."
        )
    size = folder_size(resolved)
    shutil.rmtree(resolved)
    return {"deleted": str(path), "freed_bytes": size}


# --- importing ----------------------------------------------------------------------------------


def is_plain_name(name: str) -> bool:
    """One folder name: ``--name`` must keep the copy inside the models folder, where it is
    listed and can be deleted."""
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name


def import_folder(
    source: str,
    destination_root: str,
    name: str | None,
    progress: Callable[[int, int, str], None],
    cancelled: Callable[[], bool],
) -> dict[str, Any] | None:
    """Copy a model folder (symlinks followed) into ``destination_root``; None if cancelled.

    The copy is built under a hidden name and renamed at the end, so an import that is cancelled
    or fails never leaves half a model behind."""
    from engine.models.download import check_disk
    from engine.models.resolve import resolve_model

    if name is not None and not is_plain_name(name):
        raise BadInput(
            f"{name!r} is not a folder name; give one plain name (no '/', '\\' or '..'), "
            "as the copy goes into VisionDesk's models folder."
        )
    src = Path(source).expanduser().resolve()
    resolved = resolve_model(str(src))  # a folder with a readable config.json, or ModelNotFound
    # A model the app cannot run would be copied, then never listed (describe_folder skips it).
    check_usable(str(src), resolved.config, "it was not imported")
    root = Path(destination_root).expanduser().resolve()
    target = root / (name or src.name)
    if target.exists():
        raise BadInput(f"{target} already exists; choose another name.")
    if root == src or root.is_relative_to(src):
        raise BadInput("A model folder cannot be imported into itself.")
    files = [f for f in sorted(src.rglob("*")) if f.is_file() and ".git" not in f.parts]
    total = sum(f.stat().st_size for f in files)
    root.mkdir(parents=True, exist_ok=True)
    check_disk(root, total, 0)
    partial = root / f".{target.name}.importing-{uuid.uuid4().hex[:8]}"
    done = 0
    try:
        for file in files:
            destination = partial / file.relative_to(src)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with open(file, "rb") as reader, open(destination, "wb") as writer:
                while chunk := reader.read(COPY_CHUNK):
                    if cancelled():
                        return None
                    writer.write(chunk)
                    done += len(chunk)
                    progress(done, total, file.name)
        os.replace(partial, target)
    except OSError as exc:
        code = ModelsErrorCode.NOT_ENOUGH_DISK if exc.errno == errno.ENOSPC else None
        raise EngineError(f"Could not copy {src}: {exc}", code) from exc
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    entry = describe_folder(target, model=str(target), source="folder")
    return {
        "path": str(target),
        "bytes": total,
        "files": len(files),
        "model_type": resolved.model_type,
        "needs_consent": entry.needs_consent if entry else [],
    }
