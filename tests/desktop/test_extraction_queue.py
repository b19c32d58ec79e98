"""The extraction queue in SQLite: batches, files and pages stored once, resume, pause, cancel, edits."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from desktop.extraction_queue import (
    BatchStatus,
    ExtractionQueue,
    FileStatus,
    file_sha256,
    process_started,
    settings_key,
    supported_files,
)


def page(number: int, status: str = "ok", data: object = None) -> dict:
    return {"page": number, "status": status, "data": data or {"n": number}, "issues": []}


@pytest.fixture
def queue(tmp_path: Path):
    opened = ExtractionQueue(tmp_path / "queue.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = []
    for index in range(3):
        path = tmp_path / f"doc{index}.pdf"
        path.write_bytes(f"%PDF-1.4 document {index}".encode())
        paths.append(path)
    return paths


def test_the_database_is_in_wal_mode_and_pages_are_unique_per_file(queue, files) -> None:
    assert queue._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    batch = queue.create_batch({"schema": "table"})
    (first, *_) = queue.add_files(batch.id, files)
    assert queue.store_page(first.id, page(1)) is True
    assert queue.store_page(first.id, page(1, data={"n": "changed"})) is False
    assert queue.pages(first.id)[0].data == {"n": 1}  # the first answer is kept, never replaced
    with pytest.raises(sqlite3.IntegrityError):  # the constraint itself, not only our code
        queue._db.execute(
            "INSERT INTO pages (file_id, page, status, result, stored_at) VALUES (?, 1, 'ok', '{}', 0)",
            (first.id,),
        )
    assert queue.page_counts(first.id) == {1: 1}


def test_files_are_added_once_with_their_hash_and_read_in_order(queue, files) -> None:
    batch = queue.create_batch({"schema": "table"})
    added = queue.add_files(batch.id, files)
    assert [f.path for f in added] == files
    assert added[0].sha256 == file_sha256(files[0]) and len(added[0].sha256) == 64
    assert queue.add_files(batch.id, files[:2]) == []  # already there
    assert queue.next_file(batch.id).path == files[0]  # type: ignore[union-attr]


def test_a_finished_batch_is_done_and_its_documents_are_exported_in_order(queue, files) -> None:
    batch = queue.create_batch({"schema": "table"})
    added = queue.add_files(batch.id, files)
    for index, file in enumerate(added):
        queue.start_file(file.id)
        queue.store_page(file.id, page(1))
        if index == 1:
            queue.fail_file(file.id, "bad_input", "doc1.pdf is empty (0 bytes).")
        else:
            queue.finish_file(file.id, {"file": str(file.path), "status": "ok", "pages": [page(1)]})
    assert queue.next_file(batch.id) is None
    assert queue.batch(batch.id).status == BatchStatus.DONE  # type: ignore[union-attr]
    assert [d["file"] for d in queue.documents(batch.id)] == [str(files[0]), str(files[2])]
    progress = queue.progress(batch.id)
    assert (progress.files, progress.finished, progress.failed, progress.pages_done) == (3, 3, 1, 3)
    failed = queue.files(batch.id)[1]
    assert failed.status == FileStatus.FAILED and failed.error.endswith("(0 bytes).")


def test_after_a_crash_running_files_go_back_to_the_queue_with_their_pages(
    tmp_path: Path, files
) -> None:
    path = tmp_path / "crash.sqlite3"
    queue = ExtractionQueue(path)
    batch = queue.create_batch({"schema": "table"}, name="nightly")
    first = queue.add_files(batch.id, files)[0]
    queue.start_file(first.id)
    queue.store_page(first.id, page(1))
    queue.store_page(first.id, page(2))
    queue._db.close()  # the process dies: no clean shutdown

    again = ExtractionQueue(path)
    assert [b.name for b in again.recover()] == ["nightly"]
    resumed = again.next_file(batch.id)
    assert resumed is not None and resumed.id == first.id and resumed.status == FileStatus.QUEUED
    assert [p["page"] for p in again.completed_pages(first.id)] == [1, 2]
    assert resumed.pages_done == 2
    again.close()


def test_pause_holds_the_queue_and_resume_releases_it(queue, files) -> None:
    batch = queue.create_batch({"schema": "table"})
    first = queue.add_files(batch.id, files)[0]
    queue.start_file(first.id)
    queue.pause(batch.id)
    queue.requeue_file(first.id)
    assert queue.next_file(batch.id) is None
    assert queue.batch(batch.id).status == BatchStatus.PAUSED  # type: ignore[union-attr]
    queue.resume(batch.id)
    assert queue.next_file(batch.id).id == first.id  # type: ignore[union-attr]


def test_cancel_ends_every_open_file_but_keeps_stored_pages(queue, files) -> None:
    batch = queue.create_batch({"schema": "table"})
    first = queue.add_files(batch.id, files)[0]
    queue.start_file(first.id)
    queue.store_page(first.id, page(1))
    queue.cancel(batch.id)
    assert {f.status for f in queue.files(batch.id)} == {FileStatus.CANCELLED}
    assert queue.next_file(batch.id) is None
    assert queue.pages(first.id)[0].page == 1
    queue.retry_file(first.id)  # the user asks for one file again
    assert queue.next_file(batch.id).id == first.id  # type: ignore[union-attr]


def test_reading_a_file_again_forgets_its_pages_without_a_valid_answer(queue, files) -> None:
    batch = queue.create_batch({"schema": "table"})
    first = queue.add_files(batch.id, files)[0]
    for number, status in ((1, "ok"), (2, "failed"), (3, "invalid"), (4, "invalid")):
        queue.store_page(first.id, page(number, status))
    queue.save_edit(first.id, 4, {"n": "corrected by hand"})
    queue.finish_file(first.id, {"status": "partial", "pages": [page(1)]})
    queue.retry_file(first.id)
    # Pages 2 and 3 go to the model again; page 1 was valid, page 4 is the user's answer.
    assert [stored["page"] for stored in queue.completed_pages(first.id)] == [1, 4]
    assert queue.next_file(batch.id).id == first.id  # type: ignore[union-attr]


def test_an_edit_is_kept_beside_the_answer_and_travels_back_as_the_page_data(queue, files) -> None:
    batch = queue.create_batch({"schema": "invoice"})
    first = queue.add_files(batch.id, files)[0]
    queue.store_page(first.id, page(1, data={"total": 12.0}))
    queue.save_edit(first.id, 1, {"total": 21.0})
    stored = queue.page(first.id, 1)
    assert stored is not None and stored.has_edit
    assert stored.result["data"] == {"total": 12.0} and stored.data == {"total": 21.0}
    assert queue.completed_pages(first.id)[0]["data"] == {"total": 21.0}
    queue.save_edit(first.id, 1, None)  # "cleared to null" is an edit too
    assert queue.page(first.id, 1).data is None  # type: ignore[union-attr]
    queue.clear_edit(first.id, 1)
    assert queue.page(first.id, 1).data == {"total": 12.0}  # type: ignore[union-attr]


def test_a_changed_file_forgets_its_pages_and_is_read_again(queue, files) -> None:
    batch = queue.create_batch({"schema": "table"})
    first = queue.add_files(batch.id, files)[0]
    queue.store_page(first.id, page(1))
    queue.finish_file(first.id, {"status": "ok", "pages": [page(1)]})
    assert queue.refresh_sha(first.id) is False
    files[0].write_bytes(b"%PDF-1.4 a new version")
    assert queue.refresh_sha(first.id) is True
    changed = queue.file(first.id)
    assert changed is not None and changed.status == FileStatus.QUEUED
    assert changed.pages_done == 0 and changed.document is None


def test_unfinished_batches_are_found_by_their_settings_and_names_are_unique(queue) -> None:
    settings = {"inputs": ["/a"], "schema": "table", "model": "m"}
    assert settings_key(settings) == settings_key(dict(reversed(settings.items())))
    batch = queue.create_batch(settings, name="mine")
    assert queue.unfinished_batch(settings_key(settings)).id == batch.id  # type: ignore[union-attr]
    assert queue.unfinished_batch(settings_key({**settings, "model": "n"})) is None
    queue.set_batch_status(batch.id, BatchStatus.DONE)
    assert queue.unfinished_batch(settings_key(settings)) is None  # a finished one is not resumed
    with pytest.raises(sqlite3.IntegrityError):
        queue.create_batch(settings, name="mine")


def test_two_connections_storing_the_same_pages_at_once_store_each_page_once(
    tmp_path: Path, files
) -> None:
    path = tmp_path / "shared.sqlite3"
    setup = ExtractionQueue(path)
    batch = setup.create_batch({"schema": "table"})
    file_id = setup.add_files(batch.id, files)[0].id
    results: list[bool] = []

    def writer() -> None:
        queue = ExtractionQueue(path)
        results.extend(queue.store_page(file_id, page(n)) for n in range(1, 41))
        queue.close()

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 40  # each page went in exactly once, whoever got there first
    assert setup.page_counts(file_id) == {n: 1 for n in range(1, 41)}
    setup.close()


@pytest.fixture
def other_process():
    """A live process other than this one, to own batches."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def own(queue: ExtractionQueue, batch_id: str, pid: int) -> None:
    """Record ``pid`` as the batch's reader, as its own ``start_file`` would."""
    started = process_started(pid) or 1.0  # a pid with no process: a crashed owner
    queue._db.execute(
        "INSERT OR REPLACE INTO owners (batch_id, pid, started, since) VALUES (?, ?, ?, 0)",
        (batch_id, pid, started),
    )


def test_a_batch_another_live_process_reads_is_neither_recovered_nor_handed_out(
    tmp_path: Path, files, other_process
) -> None:
    queue = ExtractionQueue(tmp_path / "shared.sqlite3")
    theirs = queue.create_batch({"schema": "table"}, name="theirs")
    reading = queue.add_files(theirs.id, files)[0]
    queue.start_file(reading.id)
    own(queue, theirs.id, other_process.pid)
    crashed = queue.create_batch({"schema": "form"}, name="crashed")
    left = queue.add_files(crashed.id, files)[0]
    queue.start_file(left.id)
    own(queue, crashed.id, 2**22 + 1)  # above Linux's pid limit: no such process

    window = ExtractionQueue(tmp_path / "shared.sqlite3")  # a second window starting up
    assert [b.name for b in window.recover()] == ["crashed"]
    assert (window.file(reading.id) or reading).status == FileStatus.RUNNING
    assert (window.file(left.id) or left).status == FileStatus.QUEUED
    assert window.next_file(theirs.id) is None
    owner = window.claim(theirs.id)
    assert owner is not None and owner.pid == other_process.pid
    assert window.claim(crashed.id) is None  # a dead owner binds nobody

    other_process.kill()
    other_process.wait()
    assert [b.name for b in window.recover()] == ["crashed", "theirs"]
    assert (window.file(reading.id) or reading).status == FileStatus.QUEUED
    window.close()
    queue.close()


def test_a_file_name_that_is_not_utf8_is_skipped_not_queued(tmp_path: Path, files) -> None:
    bad = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9 receipt.png"))
    bad.write_bytes(b"\x89PNG")
    found, skipped = supported_files([tmp_path])
    assert bad in skipped and bad not in found
    assert set(files) <= set(found)
