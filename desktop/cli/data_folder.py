"""The data folder, checked once before a command's work: a folder that cannot be written is one
line on stderr instead of a traceback from wherever it is first used."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from desktop.paths import data_dir, data_dir_path


class DataFolderError(RuntimeError):
    """The data folder (logs, batches, the search index) cannot be written."""

    def __init__(self, exc: OSError | sqlite3.Error) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        super().__init__(
            f"cannot write the data folder {data_dir_path()} (VISIONDESK_DATA_DIR): {reason}"
        )


def probe_write(folder: Path) -> None:
    """Write and remove a file in ``folder``; OSError if that fails. Modes say nothing to root,
    nor of a read-only mount: only a real write tells."""
    handle, probe = tempfile.mkstemp(dir=folder, prefix=".visiondesk-write-check-")
    os.close(handle)
    os.unlink(probe)


def check() -> Path:
    """The data folder, created if need be and known to take files; else DataFolderError."""
    try:
        folder = data_dir()
        (folder / "logs").mkdir(exist_ok=True)
        probe_write(folder)
    except OSError as exc:
        raise DataFolderError(exc) from exc
    return folder


def engine_log() -> Path:
    """Where a command's engine writes its log (the folder was checked as the command began;
    ``EngineProcess`` reports a log it cannot open as a ``DataFolderError``)."""
    return data_dir_path() / "logs" / "engine.log"
