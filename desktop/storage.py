"""SQLite (WAL) storage for conversations, messages and attachments copied in by content hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    role            TEXT NOT NULL,
    text            TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'complete',
    error_code      TEXT,
    error_message   TEXT NOT NULL DEFAULT '',
    provenance      TEXT NOT NULL DEFAULT '{}',
    created_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, position);
CREATE TABLE IF NOT EXISTS attachments (
    sha256      TEXT PRIMARY KEY,
    file_name   TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS message_attachments (
    message_id  TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    sha256      TEXT NOT NULL REFERENCES attachments(sha256),
    name        TEXT NOT NULL,
    PRIMARY KEY (message_id, position)
);
"""


class MessageStatus:
    """Where a message stands. Only assistant messages are ever anything but ``COMPLETE``."""

    COMPLETE = "complete"
    PENDING = "pending"  # written before the engine is asked; streaming into it
    CANCELLED = "cancelled"
    ERROR = "error"
    INTERRUPTED = "interrupted"  # the engine (or the app) died while answering

    RETRYABLE = frozenset({ERROR, INTERRUPTED})


@dataclass(frozen=True)
class Attachment:
    """A file owned by the data folder, named by the hash of its content."""

    sha256: str
    path: Path
    name: str  # what the user called it (original file name)


@dataclass
class Message:
    id: str
    conversation_id: str
    role: str
    text: str = ""
    status: str = MessageStatus.COMPLETE
    attachments: list[Attachment] = field(default_factory=list)
    error_code: str | None = None
    error_message: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    position: int = 0


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    created_at: float
    updated_at: float


class Storage:
    """One connection, used from the GUI thread only. Every write commits immediately."""

    def __init__(self, database: Path, attachments_dir: Path | None = None) -> None:
        self.database = Path(database)
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self.attachments_dir = attachments_dir or self.database.parent / "attachments"
        self.attachments_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.database, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    # -- conversations --------------------------------------------------------------------

    def create_conversation(self, title: str = "New chat") -> Conversation:
        now = time.time()
        conversation = Conversation(uuid.uuid4().hex, title, now, now)
        self._db.execute(
            "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (conversation.id, title, now, now),
        )
        return conversation

    def conversations(self, containing: str = "") -> list[Conversation]:
        """Most recent first; with ``containing``, those whose title or any message has it
        (case-insensitive for ASCII letters)."""
        if not containing.strip():
            rows = self._db.execute(
                "SELECT * FROM conversations ORDER BY updated_at DESC, rowid DESC"
            )
        else:
            pattern = "%" + _escape_like(containing.strip()) + "%"
            rows = self._db.execute(
                "SELECT * FROM conversations c WHERE c.title LIKE ?1 ESCAPE '\\' OR EXISTS ("
                " SELECT 1 FROM messages m WHERE m.conversation_id = c.id"
                " AND m.text LIKE ?1 ESCAPE '\\') ORDER BY updated_at DESC, rowid DESC",
                (pattern,),
            )
        return [Conversation(r["id"], r["title"], r["created_at"], r["updated_at"]) for r in rows]

    def conversation(self, conversation_id: str) -> Conversation | None:
        r = self._db.execute(
            "SELECT * FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return Conversation(r["id"], r["title"], r["created_at"], r["updated_at"]) if r else None

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        self._db.execute(
            "UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id)
        )

    def delete_conversation(self, conversation_id: str) -> None:
        self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # -- messages -------------------------------------------------------------------------

    def add_message(
        self,
        conversation_id: str,
        role: str,
        text: str,
        attachments: list[Attachment] | None = None,
        status: str = MessageStatus.COMPLETE,
    ) -> Message:
        """Append a message (and its attachment links) in one transaction."""
        now = time.time()
        message = Message(
            id=uuid.uuid4().hex,
            conversation_id=conversation_id,
            role=role,
            text=text,
            status=status,
            attachments=list(attachments or []),
            created_at=now,
        )
        with self._transaction():
            row = self._db.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            message.position = int(row[0])
            self._insert(message)
            self._db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id)
            )
        return message

    def save_message(self, message: Message) -> None:
        """Write back the mutable parts of a message: text, status, error and provenance."""
        self._db.execute(
            "UPDATE messages SET text = ?, status = ?, error_code = ?, error_message = ?,"
            " provenance = ? WHERE id = ?",
            (
                message.text,
                message.status,
                message.error_code,
                message.error_message,
                json.dumps(message.provenance),
                message.id,
            ),
        )

    def restore_messages(self, messages: list[Message]) -> None:
        """Put deleted messages back as they were: ids, places, texts, statuses, pictures."""
        with self._transaction():
            for message in messages:
                self._insert(message)

    def _insert(self, message: Message) -> None:
        """One message's row and its attachment links (inside the caller's transaction)."""
        self._db.execute(
            "INSERT INTO messages (id, conversation_id, position, role, text, status,"
            " error_code, error_message, provenance, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.id, message.conversation_id, message.position, message.role,
                message.text, message.status, message.error_code, message.error_message,
                json.dumps(message.provenance), message.created_at,
            ),
        )  # fmt: skip
        for index, attachment in enumerate(message.attachments):
            self._db.execute(
                "INSERT INTO message_attachments (message_id, position, sha256, name)"
                " VALUES (?, ?, ?, ?)",
                (message.id, index, attachment.sha256, attachment.name),
            )

    def delete_messages_from(self, conversation_id: str, position: int) -> int:
        """Delete the message at ``position`` and every later one (an edit replaces them)."""
        cursor = self._db.execute(
            "DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
            (conversation_id, position),
        )
        return cursor.rowcount

    def messages(self, conversation_id: str) -> list[Message]:
        rows = self._db.execute(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY position",
            (conversation_id,),
        ).fetchall()
        links = self._db.execute(
            "SELECT ma.message_id, ma.name, a.sha256, a.file_name FROM message_attachments ma"
            " JOIN attachments a ON a.sha256 = ma.sha256"
            " JOIN messages m ON m.id = ma.message_id"
            " WHERE m.conversation_id = ? ORDER BY ma.position",
            (conversation_id,),
        ).fetchall()
        by_message: dict[str, list[Attachment]] = {}
        for link in links:
            attachment = Attachment(
                link["sha256"], self.attachments_dir / link["file_name"], link["name"]
            )
            by_message.setdefault(link["message_id"], []).append(attachment)
        return [
            Message(
                id=r["id"],
                conversation_id=r["conversation_id"],
                role=r["role"],
                text=r["text"],
                status=r["status"],
                attachments=by_message.get(r["id"], []),
                error_code=r["error_code"],
                error_message=r["error_message"],
                provenance=json.loads(r["provenance"] or "{}"),
                created_at=r["created_at"],
                position=r["position"],
            )
            for r in rows
        ]

    # -- attachments ----------------------------------------------------------------------

    def import_attachment(self, source: Path, name: str | None = None) -> Attachment:
        """Copy ``source`` into the attachments folder as ``<sha256><ext>``; same bytes, one file."""
        source = Path(source)
        digest = _sha256_of(source)
        ext = source.suffix.lower()
        row = self._db.execute(
            "SELECT file_name FROM attachments WHERE sha256 = ?", (digest,)
        ).fetchone()
        file_name = row["file_name"] if row else f"{digest}{ext}"
        target = self.attachments_dir / file_name
        if not target.exists():
            _atomic_copy(source, target)
        if row is None:
            self._db.execute(
                "INSERT INTO attachments (sha256, file_name, size, created_at) VALUES (?, ?, ?, ?)",
                (digest, file_name, target.stat().st_size, time.time()),
            )
        return Attachment(digest, target, name or source.name)

    def mark_abandoned_answers(self) -> None:
        """Answers left pending by a previous run (the app died mid-answer) become retryable.

        Called once at start-up by the app, before any new job can be pending.
        """
        self._db.execute(
            "UPDATE messages SET status = ?, error_code = 'engine_died',"
            " error_message = 'VisionDesk closed while this answer was being written.'"
            " WHERE status = ?",
            (MessageStatus.INTERRUPTED, MessageStatus.PENDING),
        )

    # -- internals ------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replace_atomically(target: Path, fill: Callable[[Path], object]) -> None:
    """Write ``target`` whole or not at all: ``fill`` writes a temporary file beside it, which
    then replaces it."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        fill(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_copy(source: Path, target: Path) -> None:
    replace_atomically(target, lambda tmp: shutil.copyfile(source, tmp))
