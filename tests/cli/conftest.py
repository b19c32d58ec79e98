"""CLI tests run the real ``visiondesk`` entry point in a subprocess with its own data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def run_cli(tmp_path: Path, tiny_cache: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = dict(os.environ, VISIONDESK_DATA_DIR=str(tmp_path / "data"))

    def run(
        *args: str, timeout: float = 300, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "desktop.main", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            input=stdin,
        )

    return run
