"""Storage: what is written survives a reopen, WAL is on, attachments are stored once by hash."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from desktop.storage import MessageStatus, Storage


def test_messages_and_attachments_persist_across_reopen(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG fake image bytes")
    storage = Storage(tmp_path / "db.sqlite3")
    conversation = storage.create_conversation("Holiday photos")
    attachment = storage.import_attachment(photo)
    question = storage.add_message(conversation.id, "user", "What is this?", [attachment])
    answer = storage.add_message(conversation.id, "assistant", "", status=MessageStatus.PENDING)
    answer.text, answer.status = "A **beach**.", MessageStatus.COMPLETE
    answer.provenance = {"backend": "local", "model": "tiny"}
    storage.save_message(answer)
    storage.close()
    photo.unlink()  # the original may go away; the copy in the data folder stays

    reopened = Storage(tmp_path / "db.sqlite3")
    [saved] = reopened.conversations()
    assert saved.title == "Holiday photos"
    messages = reopened.messages(conversation.id)
    assert [(m.id, m.role, m.text, m.status) for m in messages] == [
        (question.id, "user", "What is this?", MessageStatus.COMPLETE),
        (answer.id, "assistant", "A **beach**.", MessageStatus.COMPLETE),
    ]
    assert messages[1].provenance == {"backend": "local", "model": "tiny"}
    [stored] = messages[0].attachments
    assert stored.name == "photo.png"
    assert stored.path.read_bytes() == b"\x89PNG fake image bytes"
    reopened.close()


def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite3")
    assert storage.journal_mode() == "wal"
    storage.close()
    with sqlite3.connect(tmp_path / "db.sqlite3") as other:  # the mode is persistent
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_attachments_are_copied_once_per_content_hash(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite3")
    first, same, other = tmp_path / "a.png", tmp_path / "copy of a.PNG", tmp_path / "b.png"
    first.write_bytes(b"same bytes")
    same.write_bytes(b"same bytes")
    other.write_bytes(b"other bytes")
    a, a_again, b = (storage.import_attachment(path) for path in (first, same, other))
    assert a.sha256 == a_again.sha256 != b.sha256
    assert a.path == a_again.path == storage.attachments_dir / f"{a.sha256}.png"
    assert a_again.name == "copy of a.PNG"  # the user's name is kept per use
    assert sorted(f.name for f in storage.attachments_dir.iterdir()) == sorted(
        [f"{a.sha256}.png", f"{b.sha256}.png"]
    )
    storage.close()


def test_answers_left_pending_by_a_crashed_app_become_retryable(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite3")
    conversation = storage.create_conversation()
    storage.add_message(conversation.id, "user", "Describe it")
    pending = storage.add_message(conversation.id, "assistant", "", status=MessageStatus.PENDING)
    storage.close()

    reopened = Storage(tmp_path / "db.sqlite3")
    reopened.mark_abandoned_answers()
    answer = reopened.messages(conversation.id)[1]
    assert answer.id == pending.id
    assert answer.status == MessageStatus.INTERRUPTED
    assert answer.status in MessageStatus.RETRYABLE
    reopened.close()


def test_deleting_a_conversation_deletes_its_messages(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite3")
    keep, drop = storage.create_conversation("keep"), storage.create_conversation("drop")
    storage.add_message(keep.id, "user", "kept")
    storage.add_message(drop.id, "user", "dropped")
    storage.delete_conversation(drop.id)
    assert [c.title for c in storage.conversations()] == ["keep"]
    assert storage.messages(drop.id) == []
    assert [m.text for m in storage.messages(keep.id)] == ["kept"]
    storage.close()
