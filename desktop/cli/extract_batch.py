"""The stored batch behind ``visiondesk extract``: which one a run works on, who reads it, and
the checks made before any file is read (``--out`` can be written)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from desktop.cli.data_folder import probe_write
from desktop.extraction_queue import ExtractionQueue, FileStatus, Owner, settings_key


class BatchBusy(RuntimeError):
    """Another live process is reading the batch this run would work on."""


class BatchGone(RuntimeError):
    """The batch was deleted while this run was reading it."""


def out_problem(out: str) -> str | None:
    """Why ``--out`` cannot be written, or None: found before hours of reading, not after."""
    path = Path(out).expanduser()
    if path.is_dir():
        return f"--out {out} is a folder; give the name of a file to write"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # missing folders are created
        folder = folder.parent
    if not folder.is_dir():
        return f"--out {out} cannot be written: {folder} is not a folder"
    try:
        probe_write(folder)
    except OSError as exc:
        return f"--out {out} cannot be written in {folder}: {exc.strerror or exc}"
    return None


def _busy(name: str, owner: Owner) -> BatchBusy:
    return BatchBusy(
        f"batch {name} is being read by process {owner.pid} (another visiondesk command or "
        "window); wait for it to finish, or stop it, and run this command again"
    )


def open_batch(
    queue: ExtractionQueue, args: argparse.Namespace, settings: dict[str, Any], files: list[Path]
) -> str:
    """The batch to work on, claimed by this process: the named one, an interrupted run of the
    same command, or a new one. ValueError for a name taken by other settings; BatchBusy when
    another live process reads it (``--fresh`` never deletes a batch being read)."""
    key = settings_key(settings)
    existing = queue.batch_named(args.batch) if args.batch else queue.unfinished_batch(key)
    if existing is not None and (owner := queue.claim(existing.id)) is not None:
        raise _busy(existing.name, owner)
    if existing is not None and args.fresh:
        queue.delete_batch(existing.id)
        existing = None
    if existing is not None and existing.key != key:
        queue.release(existing.id)
        raise ValueError(
            f"batch {args.batch!r} was started with other inputs or settings; give another "
            "--batch name, or --fresh to start it again"
        )
    if existing is None:
        created = queue.create_batch(settings, name=args.batch, key=key)
        queue.claim(created.id)
        queue.add_files(created.id, files)
        return created.id
    queue.add_files(existing.id, files)  # files new in the folders since then join the batch
    for file in queue.files(existing.id):
        changed = queue.refresh_sha(file.id)  # a file that changed is read again, whole
        if not changed and file.status in (FileStatus.FAILED, FileStatus.CANCELLED):
            queue.retry_file(file.id)
        elif not changed and not file.finished:  # engine deaths of the last run do not count
            queue.requeue_file(file.id, reset_attempts=True)
    queue.resume(existing.id)
    progress = queue.progress(existing.id)
    print(
        f"Resuming batch {existing.name}: {progress.finished} of {progress.files} files done, "
        f"{progress.pages_done} page{'s' if progress.pages_done != 1 else ''} stored.",
        file=sys.stderr,
    )
    return existing.id
