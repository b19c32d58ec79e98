"""An index run that is killed or cancelled keeps what it committed; the next run does the rest."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from engine import protocol as p
from engine.protocol import search as ps
from engine.search.samples import write_samples
from tests.engine.harness import EngineHarness, job_id

pytestmark = pytest.mark.slow

IMAGES = 240
BATCH = 4


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("resume") / "photos"
    write_samples(folder, IMAGES, size=(160, 120), suffix=".png", noise=False)
    return folder


def command(data: Path, folder: Path, model: Path) -> ps.IndexFolders:
    return ps.IndexFolders(
        job_id=job_id(),
        data_dir=str(data),
        model=str(model),
        folders=[str(folder)],
        workers=1,
        batch_size=BATCH,
    )


def counts(data: Path) -> tuple[int, int]:
    """(vectors, files) in the index, read from the file the way a new engine would."""
    with sqlite3.connect(data / "search" / "index.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        vectors = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    return int(vectors), int(items)


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def wait_for_embedded(engine: EngineHarness, job: str, at_least: int) -> None:
    for event in engine.job_events(job, timeout=300):
        if isinstance(event, p.PartialResult) and event.data.get("embedded", 0) >= at_least:
            return
        assert not isinstance(event, p.Finished), (
            f"finished before it could be interrupted: {event}"
        )


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
def test_an_index_killed_mid_run_resumes_without_redoing_committed_work(
    tiny_model: Any, tmp_path: Path, photos: Path
) -> None:
    data, model = tmp_path / "data", tiny_model("clip")
    engine = EngineHarness()
    try:
        first = command(data, photos, model)
        engine.send(first)
        wait_for_embedded(engine, first.job_id, at_least=3 * BATCH)
        workers = children(engine.proc.pid)
        os.kill(engine.proc.pid, signal.SIGKILL)
        engine.proc.wait(timeout=30)
    finally:
        engine.close()
    # The decode processes notice that their parent is gone and exit.
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and not [pid for pid in workers if Path(f"/proc/{pid}").exists()]

    vectors, items = counts(data)
    assert 3 * BATCH <= vectors < IMAGES and items == vectors  # whole batches, nothing half-written

    engine = EngineHarness()
    try:
        finished, _ = engine.run(command(data, photos, model))
    finally:
        engine.close()
    assert finished.reason == "done" and finished.result is not None
    assert finished.result["embedded"] == IMAGES - vectors  # only what the killed run had not done
    assert finished.result["unchanged"] == vectors
    assert counts(data) == (IMAGES, IMAGES)


def test_a_cancelled_index_keeps_its_batches_and_the_next_run_finishes(
    tiny_model: Any, tmp_path: Path, photos: Path
) -> None:
    data, model = tmp_path / "data", tiny_model("siglip")
    engine = EngineHarness()
    try:
        first = command(data, photos, model)
        engine.send(first)
        wait_for_embedded(engine, first.job_id, at_least=2 * BATCH)
        engine.send(p.Cancel(job_id=first.job_id))
        engine.send(p.Cancel(job_id=first.job_id))  # idempotent
        events = list(engine.job_events(first.job_id, timeout=120))
        finished = events[-1]
        assert isinstance(finished, p.Finished) and finished.reason == "cancelled"
        assert finished.result is not None
        done = finished.result["embedded"]
        assert counts(data) == (done, done) and 0 < done < IMAGES
        again, _ = engine.run(command(data, photos, model))
        assert again.reason == "done" and again.result is not None
        assert again.result["embedded"] == IMAGES - done
        assert counts(data) == (IMAGES, IMAGES)
    finally:
        engine.close()
