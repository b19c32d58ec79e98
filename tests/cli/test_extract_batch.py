"""``visiondesk extract`` batches in the queue: engine killed mid-batch, a crashed run resumed,
named batches, changed files, and a long PDF refused by the page limit."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desktop.extraction_queue import ExtractionQueue, FileStatus
from tests.engine.sample_documents import write_pdf

FAST = [
    "--one-pass", "--quant", "nf4", "--device", "cpu",
    "--max-new-tokens", "96", "--max-long-side", "192",
]  # fmt: skip
PAGE_LINE = re.compile(r"^\[\d+/\d+\] (\S+): page (\d+) (ok|invalid|failed)", re.MULTILINE)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def env(data: Path, tiny_cache: Path) -> dict[str, str]:
    return dict(os.environ, VISIONDESK_DATA_DIR=str(data))


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "desktop.main", "extract", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    process = start(env, *args)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def stored_pages(data: Path) -> int:
    try:
        with sqlite3.connect(data / "extraction.sqlite3", timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM pages").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def wait_for_pages(data: Path, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 240
    while stored_pages(data) < count:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.1)


def engine_children(pid: int) -> list[int]:
    """Engine processes started by ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and b"engine" in cmdline:
            found.append(int(stat.parent.name))
    return found


def page_lines(stderr: str) -> collections.Counter[tuple[str, int]]:
    return collections.Counter((name, int(number)) for name, number, _ in PAGE_LINE.findall(stderr))


def documents(tmp_path: Path, count: int, pages: int = 2) -> list[Path]:
    folder = tmp_path / "inbox"
    folder.mkdir(exist_ok=True)
    return [
        write_pdf(
            folder / f"doc{index:02d}.pdf", [[f"Item {index}-{n} {n * 7}"] for n in range(pages)]
        )
        for index in range(count)
    ]


def test_killing_the_engine_mid_batch_restarts_it_and_stores_each_page_exactly_once(
    env, data: Path, tiny_model, tmp_path: Path
) -> None:
    files = documents(tmp_path, 10)
    out = tmp_path / "all.json"
    model = str(tiny_model("llava"))
    process = start(env, str(tmp_path / "inbox"), "--schema", "key_values", "--model", model,
                    "--out", str(out), *FAST)  # fmt: skip
    wait_for_pages(data, 3, process)  # file 2 of 10 is being read
    engines = engine_children(process.pid)
    assert len(engines) == 1
    os.kill(engines[0], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)

    assert process.returncode == 0, stderr
    assert "Restarted it; going on with the pages left." in stderr
    lines = page_lines(stderr)
    assert set(lines) == {(f.name, n) for f in files for n in (1, 2)}
    assert set(lines.values()) == {1}  # no page was read twice, before or after the kill
    queue = ExtractionQueue(data / "extraction.sqlite3")
    (batch,) = queue.batches()
    stored = queue.files(batch.id)
    assert [f.status for f in stored] == [FileStatus.DONE] * 10
    assert all(queue.page_counts(f.id) == {1: 1, 2: 1} for f in stored)
    queue.close()
    exported = json.loads(out.read_text())
    assert [Path(d["file"]).name for d in exported] == [f.name for f in files]
    assert all([pg["page"] for pg in d["pages"]] == [1, 2] for d in exported)
    assert "Extracted 10 of 10 files (20 pages)" in stderr


def test_a_run_killed_mid_batch_resumes_when_the_same_command_runs_again(
    env, data: Path, tiny_model, tmp_path: Path
) -> None:
    files = documents(tmp_path, 4, pages=3)
    args = [
        str(tmp_path / "inbox"),
        "--schema",
        "key_values",
        "--model",
        str(tiny_model("llava")),
        *FAST,
    ]
    process = start(env, *args)
    wait_for_pages(data, 4, process)  # the second file is half done
    os.kill(process.pid, signal.SIGKILL)  # the whole command dies; its engine follows it
    _, first_stderr = process.communicate(timeout=60)
    before = stored_pages(data)
    assert 4 <= before < 12

    second = run(env, *args)
    assert second.returncode == 0, second.stderr
    assert re.search(r"Resuming batch \S+: \d of 4 files done, \d+ pages stored\.", second.stderr)
    first_lines, second_lines = page_lines(first_stderr), page_lines(second.stderr)
    assert not set(first_lines) & set(second_lines)  # nothing read before was read again
    assert len(second_lines) == 12 - before
    assert stored_pages(data) == 12
    assert len(json.loads(second.stdout)) == len(files)


def test_a_named_batch_goes_on_where_it_stopped_and_rereads_only_changed_files(
    env, data: Path, tiny_model, tmp_path: Path
) -> None:
    model = str(tiny_model("llava"))
    same, changed = documents(tmp_path, 2, pages=1)
    write_pdf(tmp_path / "inbox" / "huge.pdf", [[f"p{n}"] for n in range(500)])
    args = [str(tmp_path / "inbox"), "--schema", "key_values", "--model", model, "--batch", "march",
            "--max-pages", "3", *FAST]  # fmt: skip
    first = run(env, *args)
    assert first.returncode == 3, first.stderr  # only the long PDF failed, and clearly
    assert "huge.pdf has 500 pages to read, more than the limit of 3" in first.stderr
    assert "Extracted 2 of 3 files (2 pages)" in first.stderr

    write_pdf(changed, [["A new version of this page 99"]])
    second = run(env, *args)
    # The changed file and the failed one go back to the queue; the unchanged one stays done.
    assert "Resuming batch march: 1 of 3 files done, 1 page stored." in second.stderr
    assert set(page_lines(second.stderr)) == {(changed.name, 1)}  # only the changed file
    assert "huge.pdf has 500 pages" in second.stderr  # a failed file is tried again
    assert same.name in second.stdout and changed.name in second.stdout

    other = run(env, *[a if a != "key_values" else "form" for a in args])
    assert other.returncode == 2
    assert "batch 'march' was started with other inputs or settings" in other.stderr

    fresh = run(env, *args, "--fresh")
    assert "Resuming" not in fresh.stderr
    assert set(page_lines(fresh.stderr)) == {(same.name, 1), (changed.name, 1)}  # all again
    queue = ExtractionQueue(data / "extraction.sqlite3")
    assert [b.name for b in queue.batches()] == ["march"]  # the old one was replaced
    queue.close()


def test_never_send_with_a_cloud_backend_stops_the_batch_with_exit_5_and_keeps_it_resumable(
    env, data: Path, tmp_path: Path
) -> None:
    documents(tmp_path, 2, pages=1)
    args = [str(tmp_path / "inbox"), "--schema", "form", "--backend", "anthropic", "--never-send"]
    result = run(env, *args)
    assert result.returncode == 5, result.stderr
    assert "Stopped early: This is marked “never send”" in result.stderr
    assert "[2/2]" not in result.stderr  # the second file was not tried: it would fail the same
    queue = ExtractionQueue(data / "extraction.sqlite3")
    (batch,) = queue.batches()
    assert [f.status for f in queue.files(batch.id)] == [FileStatus.FAILED, FileStatus.QUEUED]
    queue.close()
