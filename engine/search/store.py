"""The search index on disk: one SQLite file (WAL) with files, contents, thumbnails and vectors.

A *content* is what was embedded: one image, or one page of a PDF, named by the file's hash and
the page. Files (``items``) point at contents, so a renamed or copied file reuses its vectors and
thumbnail, and vectors are kept per model. Every write happens in a transaction that the indexer
commits once per batch: an engine killed at any moment leaves a consistent file behind.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (
    path TEXT PRIMARY KEY,
    added_at REAL NOT NULL,
    last_indexed_at REAL,
    pdf_pages TEXT NOT NULL DEFAULT 'first'
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model_type TEXT NOT NULL,
    dimension INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,  -- bumped by every change to its vectors
    last_used_at REAL
);
CREATE TABLE IF NOT EXISTS contents (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,  -- '<blake2b-128 of the file>:<page>'
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    thumbnail BLOB NOT NULL  -- JPEG
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    page INTEGER NOT NULL,
    folder TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    pages INTEGER NOT NULL DEFAULT 1,
    content_id INTEGER NOT NULL REFERENCES contents(id),
    UNIQUE (path, page)
);
CREATE INDEX IF NOT EXISTS items_content ON items(content_id);
CREATE INDEX IF NOT EXISTS items_folder ON items(folder);
CREATE TABLE IF NOT EXISTS vectors (
    content_id INTEGER NOT NULL REFERENCES contents(id),
    model_id INTEGER NOT NULL REFERENCES models(id),
    vector BLOB NOT NULL,  -- float32, L2-normalised
    run_id INTEGER NOT NULL,  -- the index run that embedded it
    PRIMARY KEY (content_id, model_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_model ON vectors(model_id);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    stage TEXT NOT NULL,  -- 'walk' (found again on every walk) or 'decode' (retried on change)
    reason TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    ctime_ns INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    content_id INTEGER NOT NULL,
    model_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,  -- probability: softmax over the labels (CLIP) or sigmoid (SigLIP)
    PRIMARY KEY (content_id, model_id, label)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS labels (
    model_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    threshold REAL NOT NULL,
    templates TEXT NOT NULL,
    PRIMARY KEY (model_id, label)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT
);
"""


@dataclass(frozen=True)
class ModelRow:
    id: int
    name: str
    model_type: str
    dimension: int
    generation: int


@dataclass(frozen=True)
class ItemRow:
    id: int
    path: str
    page: int
    size: int
    mtime_ns: int
    hash: str
    pages: int
    content_id: int


def index_path(data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser() / "search" / "index.sqlite3"


class IndexStore:
    """One connection to the index file; used from one thread at a time."""

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed batch
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)  # idempotent: every statement is IF NOT EXISTS
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    @classmethod
    def open(cls, data_dir: str | Path) -> IndexStore:
        return cls(index_path(data_dir))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- folders ------------------------------------------------------------------------------
    def add_folder(self, path: str, pdf_pages: str) -> None:
        self.db.execute(
            "INSERT INTO folders(path, added_at, pdf_pages) VALUES (?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET pdf_pages = excluded.pdf_pages",
            (path, time.time(), pdf_pages),
        )

    def folders(self) -> list[tuple[str, float | None, str]]:
        rows = self.db.execute(
            "SELECT path, last_indexed_at, pdf_pages FROM folders ORDER BY path"
        ).fetchall()
        return [(str(r[0]), r[1], str(r[2])) for r in rows]

    def mark_indexed(self, path: str) -> None:
        self.db.execute(
            "UPDATE folders SET last_indexed_at = ? WHERE path = ?", (time.time(), path)
        )

    def items_in(self, path: str) -> int:
        """Entries (files, or PDF pages) found under the indexed folder ``path``."""
        row = self.db.execute("SELECT COUNT(*) FROM items WHERE folder = ?", (path,)).fetchone()
        return int(row[0])

    def remove_folder(self, path: str) -> int:
        removed = self.db.execute("DELETE FROM items WHERE folder = ?", (path,)).rowcount
        self.db.execute("DELETE FROM skipped WHERE folder = ?", (path,))
        self.db.execute("DELETE FROM folders WHERE path = ?", (path,))
        return int(removed)

    # -- models -------------------------------------------------------------------------------
    def ensure_model(self, name: str, model_type: str, dimension: int) -> ModelRow:
        self.db.execute(
            "INSERT INTO models(name, model_type, dimension, last_used_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET last_used_at = excluded.last_used_at",
            (name, model_type, dimension, time.time()),
        )
        model = self.model(name)
        assert model is not None
        if model.dimension != dimension:
            raise ValueError(
                f"{name} now makes {dimension}-dimensional vectors, but the index holds "
                f"{model.dimension}-dimensional ones for it."
            )
        return model

    def model(self, name: str) -> ModelRow | None:
        row = self.db.execute(
            "SELECT id, name, model_type, dimension, generation FROM models WHERE name = ?",
            (name,),
        ).fetchone()
        return ModelRow(*row) if row else None

    def last_used_model(self) -> ModelRow | None:
        row = self.db.execute(
            "SELECT id, name, model_type, dimension, generation FROM models "
            "ORDER BY last_used_at DESC LIMIT 1"
        ).fetchone()
        return ModelRow(*row) if row else None

    def touch_model(self, model_id: int) -> None:
        self.db.execute("UPDATE models SET last_used_at = ? WHERE id = ?", (time.time(), model_id))

    def bump_generation(self, model_ids: Iterable[int] | None = None) -> None:
        if model_ids is None:
            self.db.execute("UPDATE models SET generation = generation + 1")
        else:
            self.db.executemany(
                "UPDATE models SET generation = generation + 1 WHERE id = ?",
                [(model_id,) for model_id in model_ids],
            )

    def generation(self, model_id: int) -> int:
        row = self.db.execute("SELECT generation FROM models WHERE id = ?", (model_id,)).fetchone()
        return int(row[0]) if row else -1

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, model_id: int) -> int:
        cursor = self.db.execute(
            "INSERT INTO runs(model_id, started_at) VALUES (?, ?)", (model_id, time.time())
        )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def finish_run(self, run_id: int, outcome: str) -> None:
        self.db.execute(
            "UPDATE runs SET finished_at = ?, outcome = ? WHERE id = ?",
            (time.time(), outcome, run_id),
        )

    # -- items and contents -------------------------------------------------------------------
    def items_under(self, folder: str) -> dict[str, list[ItemRow]]:
        """The indexed files below ``folder`` (by path), whichever folder they were found in."""
        prefix = folder.rstrip("/\\") + "/"
        rows = self.db.execute(
            "SELECT id, path, page, size, mtime_ns, hash, pages, content_id FROM items "
            "WHERE folder = ? OR substr(path, 1, ?) = ? ORDER BY path, page",
            (folder, len(prefix), prefix),
        ).fetchall()
        found: dict[str, list[ItemRow]] = {}
        for row in rows:
            found.setdefault(row[1], []).append(ItemRow(*row))
        return found

    def content_id(self, key: str) -> int | None:
        row = self.db.execute("SELECT id FROM contents WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else None

    def add_content(self, key: str, width: int, height: int, thumbnail: bytes) -> int:
        self.db.execute(
            "INSERT INTO contents(key, width, height, thumbnail) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key) DO NOTHING",
            (key, width, height, thumbnail),
        )
        content_id = self.content_id(key)
        assert content_id is not None
        return content_id

    def has_vector(self, content_id: int, model_id: int) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM vectors WHERE content_id = ? AND model_id = ?", (content_id, model_id)
        ).fetchone()
        return row is not None

    def keys_with_vectors(self, content_ids: Iterable[int], model_id: int) -> set[str]:
        ids = list(content_ids)
        keys: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT c.key FROM contents c JOIN vectors v ON v.content_id = c.id "
                f"WHERE v.model_id = ? AND c.id IN ({marks})",
                (model_id, *chunk),
            ).fetchall()
            keys.update(str(row[0]) for row in rows)
        return keys

    def content_ids_with_vectors(self, model_id: int) -> set[int]:
        rows = self.db.execute("SELECT content_id FROM vectors WHERE model_id = ?", (model_id,))
        return {int(row[0]) for row in rows}

    def orphan_content_ids(self) -> list[int]:
        rows = self.db.execute(
            "SELECT id FROM contents WHERE id NOT IN (SELECT content_id FROM items)"
        ).fetchall()
        return [int(row[0]) for row in rows]

    def put_vector(self, content_id: int, model_id: int, vector: bytes, run_id: int) -> None:
        self.db.execute(
            "INSERT INTO vectors(content_id, model_id, vector, run_id) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(content_id, model_id) DO UPDATE SET "
            "vector = excluded.vector, run_id = excluded.run_id",
            (content_id, model_id, vector, run_id),
        )

    def put_item(
        self,
        path: str,
        page: int,
        folder: str,
        kind: str,
        size: int,
        mtime_ns: int,
        file_hash: str,
        pages: int,
        content_id: int,
    ) -> None:
        self.db.execute(
            "INSERT INTO items(path, page, folder, kind, size, mtime_ns, hash, pages, content_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path, page) DO UPDATE SET "
            "folder = excluded.folder, kind = excluded.kind, size = excluded.size, "
            "mtime_ns = excluded.mtime_ns, hash = excluded.hash, pages = excluded.pages, "
            "content_id = excluded.content_id",
            (path, page, folder, kind, size, mtime_ns, file_hash, pages, content_id),
        )

    def delete_items(self, item_ids: Iterable[int]) -> int:
        cursor = self.db.executemany(
            "DELETE FROM items WHERE id = ?", [(item_id,) for item_id in item_ids]
        )
        return int(cursor.rowcount)

    def delete_contents(self, content_ids: list[int]) -> None:
        """Contents no file refers to any more, with their vectors and tags."""
        rows = [(content_id,) for content_id in content_ids]
        self.db.executemany("DELETE FROM vectors WHERE content_id = ?", rows)
        self.db.executemany("DELETE FROM tags WHERE content_id = ?", rows)
        self.db.executemany("DELETE FROM contents WHERE id = ?", rows)

    def thumbnails(self, content_ids: list[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for start in range(0, len(content_ids), 500):
            chunk = content_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT id, thumbnail FROM contents WHERE id IN ({marks})", chunk
            ).fetchall()
            found.update((int(row[0]), bytes(row[1])) for row in rows)
        return found

    # -- skipped files --------------------------------------------------------------------------
    def skipped_under(self, folder: str) -> dict[str, tuple[str, int, int, int]]:
        """path -> (stage, size, mtime_ns, ctime_ns) of what was skipped below ``folder``."""
        rows = self.db.execute(
            "SELECT path, stage, size, mtime_ns, ctime_ns FROM skipped WHERE folder = ?",
            (folder,),
        ).fetchall()
        return {str(r[0]): (str(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}

    def put_skipped(
        self,
        path: str,
        folder: str,
        stage: str,
        reason: str,
        size: int = 0,
        mtime_ns: int = 0,
        ctime_ns: int = 0,
    ) -> None:
        self.db.execute(
            "INSERT INTO skipped(path, folder, stage, reason, size, mtime_ns, ctime_ns, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
            "folder = excluded.folder, stage = excluded.stage, reason = excluded.reason, "
            "size = excluded.size, mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns, "
            "at = excluded.at",
            (path, folder, stage, reason, size, mtime_ns, ctime_ns, time.time()),
        )

    def delete_skipped(self, paths: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM skipped WHERE path = ?", [(path,) for path in paths])
