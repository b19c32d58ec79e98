"""Checkpoints written atomically and verified before use.

A checkpoint is a folder ``checkpoints/step-00000012`` holding the trained tensors (safetensors),
the optimiser, scheduler and random-number states, the trainer state (step, best loss, history)
and a manifest with the SHA-256 of every file and the run's fingerprint. It is written into a
temporary folder and renamed into place, and the manifest is written last: a half-written
checkpoint is never mistaken for a whole one. On resume the newest checkpoint whose files match
their hashes and whose fingerprint matches the run is used; damaged ones are reported and skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
TENSORS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"


@dataclass
class Checkpoint:
    step: int
    path: Path


@dataclass
class Rejected:
    path: Path
    reason: str


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:08d}"


def save(
    run_dir: Path,
    step: int,
    tensors: dict[str, Any],
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    fingerprint: str,
) -> Path:
    """Write one checkpoint atomically; returns its folder."""
    import torch
    from safetensors.torch import save_file

    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS)
        )
        torch.save(optimizer_state, tmp / OPTIMIZER)
        (tmp / STATE).write_text(json.dumps(state), encoding="utf-8")
        files = {name: _sha256(tmp / name) for name in (TENSORS, OPTIMIZER, STATE)}
        manifest = {"step": step, "fingerprint": fingerprint, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _fsync_folder(tmp)
        if final.exists():  # the same step saved again (a stop right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def verify(path: Path, fingerprint: str) -> str:
    """ "" when the checkpoint is whole and belongs to this run, else the reason it is not."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its manifest is missing or damaged (an interrupted write)"
    if manifest.get("fingerprint") != fingerprint:
        return "it was written with other data or settings"
    for name, digest in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if _sha256(file) != digest:
            return f"{name} does not match its recorded hash (damaged)"
    return ""


def find(run_dir: Path, fingerprint: str) -> tuple[Checkpoint | None, list[Rejected]]:
    """The newest intact checkpoint of this run, and the newer ones that were rejected."""
    rejected: list[Rejected] = []
    for checkpoint in reversed(listed(run_dir)):
        reason = verify(checkpoint.path, fingerprint)
        if not reason:
            return checkpoint, rejected
        rejected.append(Rejected(checkpoint.path, reason))
    return None, rejected


def listed(run_dir: Path) -> list[Checkpoint]:
    """Checkpoint folders by step, oldest first (temporary folders excluded)."""
    root = run_dir / CHECKPOINTS
    found = []
    for path in root.glob("step-*") if root.is_dir() else []:
        try:
            found.append(Checkpoint(int(path.name.removeprefix("step-")), path))
        except ValueError:
            continue
    return sorted(found, key=lambda checkpoint: checkpoint.step)


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(tensors, optimiser/scheduler/rng states, trainer state) of a verified checkpoint."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path / TENSORS))
    optimizer_state = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True)
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    return tensors, optimizer_state, state


def prune(run_dir: Path, keep_last: int, best_step: int | None) -> None:
    """Keep the newest ``keep_last`` checkpoints and the best one; remove the others and debris."""
    checkpoints = listed(run_dir)
    keep = {checkpoint.step for checkpoint in checkpoints[-keep_last:]}
    if best_step is not None:
        keep.add(best_step)
    for checkpoint in checkpoints:
        if checkpoint.step not in keep:
            shutil.rmtree(checkpoint.path, ignore_errors=True)
    root = run_dir / CHECKPOINTS
    for debris in root.glob(".tmp-*") if root.is_dir() else []:
        if str(os.getpid()) not in debris.name:
            shutil.rmtree(debris, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    """Flush the files to disk before the rename makes them visible (power loss)."""
    for file in folder.iterdir():
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
