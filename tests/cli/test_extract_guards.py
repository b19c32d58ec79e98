"""``visiondesk extract`` guards its work: an ``--out`` that cannot be written is found before
any reading, results that could not be written stay exportable without reading again, a batch
another process reads is left alone, and a file name that is not UTF-8 is skipped alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from desktop.extraction_queue import ExtractionQueue, default_path, process_started

Run = Callable[..., subprocess.CompletedProcess[str]]
FAST = ["--one-pass", "--device", "cpu", "--max-new-tokens", "48", "--max-long-side", "128"]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "a.png")
    return folder


def test_an_out_that_cannot_be_written_is_a_usage_error_before_any_reading(
    run_cli: Run, inbox: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (blocker / "out.json", inbox):
        result = run_cli("extract", str(inbox), "--schema", "receipt", "--model", "nowhere",
                         "--out", str(out), *FAST)  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "--out" in result.stderr
        assert "page" not in result.stderr  # nothing was read
        assert not default_path(tmp_path / "data").exists()  # no batch was made


def test_results_that_could_not_be_written_are_written_by_a_rerun_without_reading_again(
    run_cli: Run, tiny_model: Callable[[str], Path], inbox: Path, tmp_path: Path
) -> None:
    (tmp_path / ".out.json.part").mkdir()  # the export's temporary file cannot be made
    args = ["extract", str(inbox), "--schema", "key_values", "--model", str(tiny_model("llava"))]
    first = run_cli(*args, *FAST, "--out", str(tmp_path / "out.json"))
    assert first.returncode == 1, first.stderr
    assert ": page 1 " in first.stderr
    assert "the same command with another --out writes them" in first.stderr
    second = run_cli(*args, *FAST, "--out", str(tmp_path / "elsewhere.json"))
    assert second.returncode == 0, second.stderr
    assert "Resuming batch" in second.stderr and ": page 1 " not in second.stderr
    assert Path(json.loads((tmp_path / "elsewhere.json").read_text())["file"]).name == "a.png"


@pytest.fixture
def reader() -> Iterator[subprocess.Popen[bytes]]:
    """Another live process, reading a batch."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def test_a_batch_another_live_process_reads_is_refused_and_fresh_does_not_delete_it(
    run_cli: Run, inbox: Path, tmp_path: Path, reader: subprocess.Popen[bytes]
) -> None:
    queue = ExtractionQueue(default_path(tmp_path / "data"))
    batch = queue.create_batch({"schema": "receipt"}, name="march")
    queue._db.execute(
        "INSERT INTO owners (batch_id, pid, started, since) VALUES (?, ?, ?, 0)",
        (batch.id, reader.pid, process_started(reader.pid)),
    )
    for extra in ([], ["--fresh"]):
        result = run_cli("extract", str(inbox), "--schema", "receipt", "--model", "nowhere",
                         "--batch", "march", *extra, *FAST)  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert f"batch march is being read by process {reader.pid}" in result.stderr
        assert queue.batch(batch.id) is not None
    queue.close()


def test_a_file_name_that_is_not_utf8_is_skipped_with_its_reason_and_the_rest_is_read(
    run_cli: Run, tiny_model: Callable[[str], Path], inbox: Path
) -> None:
    bad = os.fsdecode(os.fsencode(inbox) + b"/caf\xe9 receipt.png")
    Image.new("RGB", (64, 48), (30, 30, 200)).save(bad)
    result = run_cli("extract", str(inbox), "--schema", "key_values",
                     "--model", str(tiny_model("llava")), *FAST)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "The file name 'caf\\xe9 receipt.png' is not valid UTF-8" in result.stderr
    assert Path(json.loads(result.stdout)["file"]).name == "a.png"  # one file: one object


def test_chat_refuses_an_image_whose_name_is_not_utf8_with_one_line(
    run_cli: Run, inbox: Path
) -> None:
    bad = os.fsdecode(os.fsencode(inbox) + b"/caf\xe9.png")
    Image.new("RGB", (8, 8)).save(bad)
    result = run_cli("chat", "--model", "nowhere", "--image", bad, "What is this?")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "visiondesk: error: the file name "
        f"'{os.fsencode(bad).decode('utf-8', 'backslashreplace')}' is not valid UTF-8; "
        "rename the file to send it"
    ]
