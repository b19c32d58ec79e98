"""A data folder that cannot be written is one line on stderr and exit 1, for every command;
``models make-demo`` runs the builder with VisionDesk's own interpreter, whatever is on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def visiondesk(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "desktop.main", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["chat", "--model", "nowhere", "hi"],
        ["search", "status"],
        ["extract", "a.png", "--schema", "receipt", "--model", "nowhere"],
    ],
)
def test_a_data_folder_that_cannot_be_written_is_one_line_and_exit_1(
    tmp_path: Path, args: list[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    data = blocker / "data"
    result = visiondesk(dict(os.environ, VISIONDESK_DATA_DIR=str(data)), *args)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"visiondesk: error: cannot write the data folder {data} (VISIONDESK_DATA_DIR): "
        "Not a directory"
    ]


def test_make_demo_needs_no_python_on_path(tmp_path: Path, tiny_cache: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path / "no-python-here"))
    result = visiondesk(env, "models", "make-demo", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo" / "config.json").is_file()
