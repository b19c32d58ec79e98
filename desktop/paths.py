"""Where VisionDesk keeps its files: platformdirs folders, overridable for tests and portable use."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "VisionDesk"


def data_dir_path() -> Path:
    """Where the data folder is, without creating it. ``VISIONDESK_DATA_DIR`` overrides it."""
    override = os.environ.get("VISIONDESK_DATA_DIR")
    return (
        Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    )


def data_dir() -> Path:
    """The data folder (database, attachments), created if need be."""
    path = data_dir_path()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Scratch files such as pasted images; inside the data folder when it is overridden."""
    override = os.environ.get("VISIONDESK_DATA_DIR")
    if override:
        path = Path(override) / "cache"
    else:
        path = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    return data_dir() / "visiondesk.sqlite3"


def runs_dir() -> Path:
    """Where fine-tuning runs are made (one folder each)."""
    return data_dir() / "finetune"
