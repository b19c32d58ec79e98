"""``visiondesk search …`` end to end: the real CLI, engine and tiny CLIP, with its own data folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.search.samples import KINDS, make_image

pytestmark = pytest.mark.slow


def test_index_query_tag_status_and_forget_from_the_terminal(
    run_cli: Any, tiny_model: Any, tmp_path: Path
) -> None:
    model = str(tiny_model("clip"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, kind in enumerate(KINDS):
        make_image(kind, (120, 90), index).save(folder / f"{kind}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")

    index = run_cli("search", "index", str(folder), "--model", model)
    assert index.returncode == 0, index.stderr
    assert "7 files: 6 embedded" in index.stdout and "1 skipped" in index.stdout
    assert "visiondesk search status" in index.stderr

    query = run_cli("search", "query", "whiteboard with a bar chart", "--top", "3", "--json")
    assert query.returncode == 0, query.stderr
    result = json.loads(query.stdout)
    assert len(result["hits"]) == 3 and result["exact"] is True
    assert all(Path(hit["path"]).parent == folder for hit in result["hits"])
    scores = [hit["score"] for hit in result["hits"]]
    assert scores == sorted(scores, reverse=True)

    similar = run_cli("search", "query", "--image", str(folder / "chart.png"), "--top", "2")
    assert similar.returncode == 0, similar.stderr
    first = similar.stdout.splitlines()[0].split()
    assert first[0] == "1" and float(first[1]) == pytest.approx(1.0, abs=1e-3)
    assert first[2] == str(folder / "chart.png")

    tag = run_cli("search", "tag", "invoice", "chart", "photo", "--threshold", "0.3")
    assert tag.returncode == 0, tag.stderr
    assert "Scored 6 images (softmax" in tag.stdout and "  chart:" in tag.stdout

    status = run_cli("search", "status")
    assert status.returncode == 0, status.stderr
    assert f"{folder}  6 files" in status.stdout
    assert "(clip, 64-d) 6 vectors; tags: invoice, chart, photo" in status.stdout
    assert f"{folder / 'broken.jpg'}: broken.jpg is damaged or truncated" in status.stdout

    forget = run_cli("search", "forget", str(folder))
    assert forget.returncode == 0 and "Removed 6 files" in forget.stdout
    assert json.loads(run_cli("search", "status", "--json").stdout)["folders"] == []


def test_search_mistakes_give_clear_errors_and_exit_codes(run_cli: Any, tmp_path: Path) -> None:
    missing = run_cli("search", "index", str(tmp_path / "nope"), "--model", "x/y")
    assert missing.returncode == 3 and "folder not found" in missing.stderr
    nothing = run_cli("search", "query", "cats")
    assert nothing.returncode == 3 and "Nothing is indexed yet" in nothing.stderr
    blank = run_cli("search", "query")
    assert blank.returncode == 2 and "give a text to search for" in blank.stderr


def test_a_reader_that_closed_the_pipe_gets_a_quiet_exit(tmp_path: Path, tiny_cache: Path) -> None:
    """``visiondesk search status | true``: the output has nowhere to go; no traceback."""
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before anything is written
    try:
        result = subprocess.run(
            [sys.executable, "-m", "desktop.main", "search", "status"],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, VISIONDESK_DATA_DIR=str(tmp_path / "data")),
            timeout=120,
        )
    finally:
        os.close(writer)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
