"""The extraction batch queue in SQLite (WAL): batches, files and pages, for the CLI and the GUI.

A batch is a list of files read with one set of settings (schema, model, options). Each page's
result is stored as it arrives, exactly once: ``pages`` has a UNIQUE (file, page) constraint and
a page that is already there is never replaced. After a crash (of the engine, the CLI or the
window) the batch goes on from what is stored: the finished pages of a file travel back to the
engine as ``completed_pages``, so only the missing ones are read again. Plain Python, no Qt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    key         TEXT NOT NULL,
    settings    TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_key ON batches(key, created_at);
CREATE TABLE IF NOT EXISTS files (
    id          INTEGER PRIMARY KEY,
    batch_id    TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL,
    error_code  TEXT,
    error       TEXT NOT NULL DEFAULT '',
    pages_total INTEGER NOT NULL DEFAULT 0,
    document    TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    never_send  INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL,
    UNIQUE (batch_id, path)
);
CREATE INDEX IF NOT EXISTS files_by_batch ON files(batch_id, position);
CREATE TABLE IF NOT EXISTS owners (
    batch_id    TEXT PRIMARY KEY REFERENCES batches(id) ON DELETE CASCADE,
    pid         INTEGER NOT NULL,
    started     REAL NOT NULL,
    since       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pages (
    file_id     INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    page        INTEGER NOT NULL,
    status      TEXT NOT NULL,
    result      TEXT NOT NULL,
    edited      TEXT,
    stored_at   REAL NOT NULL,
    edited_at   REAL,
    UNIQUE (file_id, page)
);
"""


class FileStatus:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # the engine finished it; its document may still be partial or failed
    FAILED = "failed"  # the file could not be read (bad input, model problem, engine died)
    CANCELLED = "cancelled"


class BatchStatus:
    ACTIVE = "active"  # work left, not paused
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


OPEN_FILE_STATUSES = (FileStatus.QUEUED, FileStatus.RUNNING)


@dataclass(frozen=True)
class Owner:
    """The process reading a batch: its pid and start time (a pid alone may be reused)."""

    pid: int
    started: float

    @property
    def alive(self) -> bool:
        return process_started(self.pid) == self.started


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (in an opaque unit), or None if there is no such process."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the models' libraries
        return _proc_started(pid)
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:  # pragma: no cover - another user's process: it exists
        return _proc_started(pid)


def _proc_started(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return float(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def this_process() -> Owner:
    return Owner(os.getpid(), process_started(os.getpid()) or 0.0)


def _live_other(row: sqlite3.Row) -> Owner | None:
    """The owner a row of ``owners`` names, if it is another process and still alive."""
    owner = Owner(int(row["pid"]), float(row["started"]))
    return owner if owner != this_process() and owner.alive else None


@dataclass
class Batch:
    id: str
    name: str
    key: str
    settings: dict[str, Any]
    status: str
    created_at: float
    updated_at: float


@dataclass
class QueuedFile:
    id: int
    batch_id: str
    position: int
    path: Path
    sha256: str
    status: str
    error_code: str | None
    error: str
    pages_total: int  # pages to read; 0 until known
    pages_done: int  # pages stored
    document: dict[str, Any] | None
    attempts: int
    never_send: bool

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def finished(self) -> bool:
        return self.status not in OPEN_FILE_STATUSES

    @property
    def ok(self) -> bool:
        return self.status == FileStatus.DONE and (self.document or {}).get("status") == "ok"


@dataclass
class StoredPage:
    file_id: int
    page: int
    status: str
    result: dict[str, Any]  # the PageResult as the engine sent it
    edited: Any = None  # the user's corrected data, if any
    has_edit: bool = False
    stored_at: float = 0.0

    @property
    def data(self) -> Any:
        """What the page says now: the user's edit if there is one, else the model's answer."""
        return self.edited if self.has_edit else self.result.get("data")

    def effective_result(self) -> dict[str, Any]:
        """The page result with the user's edit in it (what a merge or a resume should use)."""
        if not self.has_edit:
            return self.result
        return {**self.result, "data": self.edited}


@dataclass
class Progress:
    files: int = 0
    finished: int = 0
    failed: int = 0
    pages_done: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (the engine's provenance uses the same), or "" if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def settings_key(settings: dict[str, Any]) -> str:
    """A stable key for a batch's inputs and settings (what automatic resume looks up)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


class ExtractionQueue:
    """One SQLite file; every method is one short transaction, safe across processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    # --- batches -----------------------------------------------------------------------------

    def create_batch(
        self, settings: dict[str, Any], *, name: str | None = None, key: str | None = None
    ) -> Batch:
        now = time.time()
        batch_id = uuid.uuid4().hex
        key = key or settings_key(settings)
        name = name or time.strftime("batch-%Y%m%d-%H%M%S-", time.localtime(now)) + batch_id[:6]
        self._db.execute(
            "INSERT INTO batches (id, name, key, settings, status, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (batch_id, name, key, json.dumps(settings), BatchStatus.ACTIVE, now, now),
        )
        batch = self.batch(batch_id)
        assert batch is not None
        return batch

    def batch(self, batch_id: str) -> Batch | None:
        row = self._db.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return _batch(row) if row else None

    def batch_named(self, name: str) -> Batch | None:
        row = self._db.execute("SELECT * FROM batches WHERE name = ?", (name,)).fetchone()
        return _batch(row) if row else None

    def unfinished_batch(self, key: str) -> Batch | None:
        """The latest batch with this key that still has work left (what a re-run resumes)."""
        row = self._db.execute(
            "SELECT * FROM batches WHERE key = ? AND status IN (?, ?) "
            "ORDER BY created_at DESC LIMIT 1",
            (key, BatchStatus.ACTIVE, BatchStatus.PAUSED),
        ).fetchone()
        return _batch(row) if row else None

    def batches(self) -> list[Batch]:
        rows = self._db.execute("SELECT * FROM batches ORDER BY created_at DESC, rowid DESC")
        return [_batch(row) for row in rows]

    def set_batch_status(self, batch_id: str, status: str) -> None:
        self._db.execute(
            "UPDATE batches SET status = ?, updated_at = ? WHERE id = ?",
            (status, time.time(), batch_id),
        )

    def pause(self, batch_id: str) -> None:
        """Stop handing out files; the one being read is the caller's to cancel and requeue."""
        batch = self.batch(batch_id)
        if batch is not None and batch.status == BatchStatus.ACTIVE:
            self.set_batch_status(batch_id, BatchStatus.PAUSED)

    def resume(self, batch_id: str) -> None:
        batch = self.batch(batch_id)
        if batch is not None and batch.status in (BatchStatus.PAUSED, BatchStatus.DONE):
            self.set_batch_status(batch_id, BatchStatus.ACTIVE)
            self.update_batch_status(batch_id)

    def cancel(self, batch_id: str) -> None:
        """Files not finished yet are cancelled; their stored pages stay (and are exported)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE files SET status = ?, updated_at = ? WHERE batch_id = ? "
                "AND status IN (?, ?)",
                (FileStatus.CANCELLED, time.time(), batch_id, *OPEN_FILE_STATUSES),
            )
            self._db.execute(
                "UPDATE batches SET status = ?, updated_at = ? WHERE id = ?",
                (BatchStatus.CANCELLED, time.time(), batch_id),
            )
        self.release(batch_id)

    def delete_batch(self, batch_id: str) -> None:
        self._db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

    # --- who reads a batch ------------------------------------------------------------------
    # A batch is read by one process at a time: the one that started its last file, until the
    # batch is done or that process ends. Another process (a second command, a second window,
    # a window's start-up recovery) leaves it alone meanwhile; a crashed owner binds nobody.

    def owner(self, batch_id: str) -> Owner | None:
        """The live process other than this one that is reading the batch, if any."""
        row = self._db.execute(
            "SELECT pid, started FROM owners WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        return None if row is None else _live_other(row)

    def claim(self, batch_id: str) -> Owner | None:
        """Take the batch for this process; None if taken, else the live owner that has it."""
        me = this_process()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # the check and the claim in one step
            owner = self.owner(batch_id)
            if owner is not None:
                return owner
            self._db.execute(
                "INSERT OR REPLACE INTO owners (batch_id, pid, started, since) "
                "SELECT id, ?, ?, ? FROM batches WHERE id = ?",
                (me.pid, me.started, time.time(), batch_id),
            )
        return None

    def release(self, batch_id: str) -> None:
        """This process no longer reads the batch."""
        me = this_process()
        self._db.execute(
            "DELETE FROM owners WHERE batch_id = ? AND pid = ? AND started = ?",
            (batch_id, me.pid, me.started),
        )

    def update_batch_status(self, batch_id: str) -> str:
        """An active batch with no open file left is done (and a done one with work is active)."""
        batch = self.batch(batch_id)
        if batch is None:
            return BatchStatus.DONE
        open_files = self._db.execute(
            "SELECT COUNT(*) FROM files WHERE batch_id = ? AND status IN (?, ?)",
            (batch_id, *OPEN_FILE_STATUSES),
        ).fetchone()[0]
        status = batch.status
        if status == BatchStatus.ACTIVE and open_files == 0:
            status = BatchStatus.DONE
        elif status == BatchStatus.DONE and open_files:
            status = BatchStatus.ACTIVE
        if status != batch.status:
            self.set_batch_status(batch_id, status)
        if status == BatchStatus.DONE:
            self.release(batch_id)
        return status

    def recover(self) -> list[Batch]:
        """After a crash: files left "running" go back to the queue (with a clean count of
        engine deaths: those of another session say nothing about this one). Returns the batches
        with work left."""
        # A batch that another live process is reading was not interrupted: it is left alone.
        taken = {
            row["batch_id"]
            for row in self._db.execute("SELECT batch_id, pid, started FROM owners")
            if _live_other(row) is not None
        }
        running = self._db.execute(
            "SELECT id, batch_id FROM files WHERE status = ?", (FileStatus.RUNNING,)
        ).fetchall()
        self._db.executemany(
            "UPDATE files SET status = ?, attempts = 0 WHERE id = ? AND status = ?",
            [
                (FileStatus.QUEUED, row["id"], FileStatus.RUNNING)
                for row in running
                if row["batch_id"] not in taken
            ],
        )
        rows = self._db.execute(
            "SELECT * FROM batches WHERE status IN (?, ?) ORDER BY created_at DESC",
            (BatchStatus.ACTIVE, BatchStatus.PAUSED),
        )
        return [batch for batch in map(_batch, rows) if batch.id not in taken]

    # --- files -------------------------------------------------------------------------------

    def add_files(
        self, batch_id: str, paths: list[Path], *, never_send: bool = False
    ) -> list[QueuedFile]:
        """Append files (a path already in the batch is skipped); returns the new ones."""
        now = time.time()
        added: list[int] = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            position = self._db.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM files WHERE batch_id = ?", (batch_id,)
            ).fetchone()[0]
            for path in paths:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO files (batch_id, position, path, sha256, status, "
                    "never_send, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        batch_id,
                        position,
                        str(path),
                        file_sha256(Path(path)),
                        FileStatus.QUEUED,
                        int(never_send),
                        now,
                    ),
                )
                if cursor.rowcount:
                    added.append(int(cursor.lastrowid or 0))
                    position += 1
        if added:
            self.update_batch_status(batch_id)
        return [f for f in (self.file(file_id) for file_id in added) if f is not None]

    def files(self, batch_id: str) -> list[QueuedFile]:
        rows = self._db.execute(
            f"SELECT f.*, ({_PAGES_DONE}) AS pages_done FROM files f "
            "WHERE batch_id = ? ORDER BY position",
            (batch_id,),
        )
        return [_file(row) for row in rows]

    def file(self, file_id: int) -> QueuedFile | None:
        row = self._db.execute(
            f"SELECT f.*, ({_PAGES_DONE}) AS pages_done FROM files f WHERE id = ?", (file_id,)
        ).fetchone()
        return _file(row) if row else None

    def next_file(self, batch_id: str) -> QueuedFile | None:
        """The next file to read, or None when the batch is paused, cancelled or finished."""
        batch = self.batch(batch_id)
        if batch is None or batch.status != BatchStatus.ACTIVE or self.owner(batch_id) is not None:
            return None  # ...or another live process reads it
        row = self._db.execute(
            f"SELECT f.*, ({_PAGES_DONE}) AS pages_done FROM files f "
            "WHERE batch_id = ? AND status IN (?, ?) ORDER BY position LIMIT 1",
            (batch_id, *OPEN_FILE_STATUSES),
        ).fetchone()
        return _file(row) if row else None

    def start_file(self, file_id: int) -> None:
        """The file is being read, by this process: its batch is this process's meanwhile."""
        file = self.file(file_id)
        if file is not None:
            self.claim(file.batch_id)
        self._db.execute(
            "UPDATE files SET status = ?, attempts = attempts + 1, error_code = NULL, error = '', "
            "updated_at = ? WHERE id = ?",
            (FileStatus.RUNNING, time.time(), file_id),
        )

    def requeue_file(self, file_id: int, *, reset_attempts: bool = False) -> None:
        """Back to the queue (pause, engine restart): its stored pages are kept."""
        attempts = ", attempts = 0" if reset_attempts else ""
        self._db.execute(
            f"UPDATE files SET status = ?, updated_at = ?{attempts} WHERE id = ? AND status != ?",
            (FileStatus.QUEUED, time.time(), file_id, FileStatus.CANCELLED),
        )
        file = self.file(file_id)
        if file is not None:
            self.update_batch_status(file.batch_id)

    def retry_file(self, file_id: int) -> None:
        """Read a finished, failed or cancelled file again. Its valid pages are kept; a page
        without a valid answer is forgotten, so it is read again (with the model chosen now),
        unless the user corrected it."""
        file = self.file(file_id)
        if file is None:
            return
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "DELETE FROM pages WHERE file_id = ? AND status != 'ok' AND edited IS NULL",
                (file_id,),
            )
            self._db.execute(
                "UPDATE files SET status = ?, attempts = 0, error_code = NULL, error = '', "
                "updated_at = ? WHERE id = ?",
                (FileStatus.QUEUED, time.time(), file_id),
            )
        batch = self.batch(file.batch_id)
        if batch is not None and batch.status in (BatchStatus.DONE, BatchStatus.CANCELLED):
            self.set_batch_status(file.batch_id, BatchStatus.ACTIVE)

    def finish_file(self, file_id: int, document: dict[str, Any]) -> None:
        pages = len(document.get("pages") or [])
        self._db.execute(
            "UPDATE files SET status = ?, document = ?, pages_total = MAX(pages_total, ?), "
            "error_code = NULL, error = '', updated_at = ? WHERE id = ?",
            (FileStatus.DONE, json.dumps(document), pages, time.time(), file_id),
        )
        self._after_file(file_id)

    def fail_file(self, file_id: int, code: str | None, message: str) -> None:
        self._db.execute(
            "UPDATE files SET status = ?, error_code = ?, error = ?, updated_at = ? WHERE id = ?",
            (FileStatus.FAILED, code, message, time.time(), file_id),
        )
        self._after_file(file_id)

    def cancel_file(self, file_id: int) -> None:
        self._db.execute(
            "UPDATE files SET status = ?, updated_at = ? WHERE id = ? AND status IN (?, ?)",
            (FileStatus.CANCELLED, time.time(), file_id, *OPEN_FILE_STATUSES),
        )
        self._after_file(file_id)

    def remove_file(self, file_id: int) -> None:
        file = self.file(file_id)
        self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        if file is not None:
            self.update_batch_status(file.batch_id)

    def _after_file(self, file_id: int) -> None:
        file = self.file(file_id)
        if file is not None:
            self.update_batch_status(file.batch_id)

    def set_pages_total(self, file_id: int, total: int) -> None:
        self._db.execute("UPDATE files SET pages_total = ? WHERE id = ?", (total, file_id))

    def set_document(self, file_id: int, document: dict[str, Any]) -> None:
        """Replace a finished file's document (after the user's edits were merged again)."""
        self._db.execute(
            "UPDATE files SET document = ?, updated_at = ? WHERE id = ?",
            (json.dumps(document), time.time(), file_id),
        )

    def set_never_send(self, file_id: int, never_send: bool) -> None:
        self._db.execute("UPDATE files SET never_send = ? WHERE id = ?", (int(never_send), file_id))

    def refresh_sha(self, file_id: int) -> bool:
        """Hash the file again; if it changed, forget its pages and read it again. True if so."""
        file = self.file(file_id)
        if file is None:
            return False
        current = file_sha256(file.path)
        if current == file.sha256:
            return False
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM pages WHERE file_id = ?", (file_id,))
            self._db.execute(
                "UPDATE files SET sha256 = ?, status = ?, document = NULL, pages_total = 0, "
                "attempts = 0, error_code = NULL, error = '', updated_at = ? WHERE id = ?",
                (current, FileStatus.QUEUED, time.time(), file_id),
            )
        return True

    # --- pages -------------------------------------------------------------------------------

    def store_page(self, file_id: int, result: dict[str, Any]) -> bool:
        """Store one page's result once; a page already stored is kept. True if it was new."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO pages (file_id, page, status, result, stored_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (file_id, int(result["page"]), str(result.get("status", "")), json.dumps(result),
             time.time()),
        )  # fmt: skip
        return bool(cursor.rowcount)

    def pages(self, file_id: int) -> list[StoredPage]:
        rows = self._db.execute(
            "SELECT * FROM pages WHERE file_id = ? ORDER BY page", (file_id,)
        ).fetchall()
        return [_page(row) for row in rows]

    def page(self, file_id: int, number: int) -> StoredPage | None:
        row = self._db.execute(
            "SELECT * FROM pages WHERE file_id = ? AND page = ?", (file_id, number)
        ).fetchone()
        return _page(row) if row else None

    def completed_pages(self, file_id: int) -> list[dict[str, Any]]:
        """Stored page results (with the user's edits) to send back as ``completed_pages``."""
        return [page.effective_result() for page in self.pages(file_id)]

    def save_edit(self, file_id: int, number: int, data: Any) -> None:
        """The user's correction of one page's data (the model's answer is kept beside it)."""
        self._db.execute(
            "UPDATE pages SET edited = ?, edited_at = ? WHERE file_id = ? AND page = ?",
            (json.dumps(data), time.time(), file_id, number),
        )

    def clear_edit(self, file_id: int, number: int) -> None:
        self._db.execute(
            "UPDATE pages SET edited = NULL, edited_at = NULL WHERE file_id = ? AND page = ?",
            (file_id, number),
        )

    def page_counts(self, file_id: int) -> dict[int, int]:
        """How many rows each page has (always 1: a check for tests and diagnostics)."""
        rows = self._db.execute(
            "SELECT page, COUNT(*) FROM pages WHERE file_id = ? GROUP BY page", (file_id,)
        )
        return {int(page): int(count) for page, count in rows}

    # --- summaries ---------------------------------------------------------------------------

    def progress(self, batch_id: str) -> Progress:
        files = self.files(batch_id)
        progress = Progress(files=len(files))
        for file in files:
            progress.by_status[file.status] = progress.by_status.get(file.status, 0) + 1
            progress.pages_done += file.pages_done
            if file.finished:
                progress.finished += 1
            if file.status == FileStatus.FAILED:
                progress.failed += 1
        return progress

    def documents(self, batch_id: str) -> list[dict[str, Any]]:
        """The finished files' documents, in batch order (what an export writes)."""
        return [f.document for f in self.files(batch_id) if f.document is not None]


_PAGES_DONE = "SELECT COUNT(*) FROM pages p WHERE p.file_id = f.id"


def _batch(row: sqlite3.Row) -> Batch:
    return Batch(
        id=row["id"],
        name=row["name"],
        key=row["key"],
        settings=json.loads(row["settings"]),
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _file(row: sqlite3.Row) -> QueuedFile:
    return QueuedFile(
        id=int(row["id"]),
        batch_id=row["batch_id"],
        position=int(row["position"]),
        path=Path(row["path"]),
        sha256=row["sha256"],
        status=row["status"],
        error_code=row["error_code"],
        error=row["error"],
        pages_total=int(row["pages_total"]),
        pages_done=int(row["pages_done"]),
        document=json.loads(row["document"]) if row["document"] else None,
        attempts=int(row["attempts"]),
        never_send=bool(row["never_send"]),
    )


def _page(row: sqlite3.Row) -> StoredPage:
    edited = row["edited"]
    return StoredPage(
        file_id=int(row["file_id"]),
        page=int(row["page"]),
        status=row["status"],
        result=json.loads(row["result"]),
        edited=json.loads(edited) if edited is not None else None,
        has_edit=edited is not None,
        stored_at=float(row["stored_at"]),
    )


def default_path(data_dir: Path) -> Path:
    return data_dir / "extraction.sqlite3"


SUPPORTED_SUFFIXES = frozenset(
    {".pdf", ".png", ".jpg", ".jpeg", ".jfif", ".webp", ".tif", ".tiff", ".gif", ".bmp"}
)


def printable(path: Path | str) -> str:
    """A path as text that can be shown, stored and sent: bytes of a name that are not UTF-8
    (a Latin-1 name from an old zip, say) appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def utf8_name(path: Path | str) -> bool:
    """Whether the path is valid UTF-8, as the queue and the engine's protocol need."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def supported_files(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """PDFs and images to read (folders searched recursively, hidden entries skipped), and the
    dropped files that are neither. A file named like a PDF or an image is always taken: if it
    is not what its name says, the engine's error for it is shown on that file."""
    files: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                found.resolve()
                for found in path.rglob("*")
                if found.is_file()
                and found.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in found.relative_to(path).parts)
            )
        elif path.suffix.lower() in SUPPORTED_SUFFIXES or not path.exists():
            files.append(path.resolve())  # a damaged or missing file's error shows on it
        else:
            skipped.append(path)
    skipped += [file for file in files if not utf8_name(file)]  # cannot be stored or sent
    return list(dict.fromkeys(file for file in files if utf8_name(file))), skipped
