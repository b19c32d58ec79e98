"""Engine death seen from the window: it says so, restarts, loses nothing, and Retry works."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from desktop import paths
from desktop.storage import MessageStatus, Storage
from engine import protocol as p
from tests.desktop.fake_engine import DEFAULT_REPLY
from tests.desktop.helpers import chats, make_image


def test_a_crash_mid_answer_restarts_the_engine_keeps_history_and_retry_answers(
    qtbot, make_window, tmp_path: Path, command_log: Path
) -> None:
    storage = Storage(paths.database_path())
    conversation = storage.create_conversation("Chart questions")
    storage.add_message(conversation.id, "user", "What colour is the bar?")
    storage.add_message(conversation.id, "assistant", "It is **blue**.")
    storage.close()
    window = make_window("--crash-on-chat", str(tmp_path / "crashed-once"), "--delay", "0.02")
    first_pid = window.client.engine_pid()
    assert window.session.attach_files([make_image(tmp_path / "chart.png")]) == []

    with qtbot.waitSignal(window.client.engine_died, timeout=10_000):
        window.send_message("And how tall is it?")
    # The window says what happened while the new engine starts.
    banner = window.chat_view.engine_banner
    assert banner.isVisible() and "Engine stopped — restarting…" in banner.label.text()
    assert window.status_bar.state.text() == "Engine stopped — restarting…"

    qtbot.waitUntil(window.client.is_ready, timeout=10_000)
    assert window.client.engine_pid() not in (None, first_pid)
    assert "Engine restarted" in banner.label.text()
    assert window.client.open_jobs() == set()  # the interrupted job ended

    cards = window.chat_view.messages.cards()
    assert [c.message.role for c in cards] == ["user", "assistant", "user", "assistant"]
    assert [c.body.toPlainText() for c in cards[:3]] == [
        "What colour is the bar?",
        "It is blue.",
        "And how tall is it?",
    ]
    assert cards[2].thumbnails is not None
    answer = cards[3]
    assert answer.message.status == MessageStatus.INTERRUPTED
    assert answer.retry_button.isVisible()
    assert "engine stopped" in answer.error_label.text().lower()

    stored = Storage(paths.database_path())  # what a restarted app would see
    saved = stored.messages(conversation.id)
    stored.close()
    assert [(m.role, m.text) for m in saved[:3]] == [
        ("user", "What colour is the bar?"),
        ("assistant", "It is **blue**."),
        ("user", "And how tall is it?"),
    ]
    assert saved[2].attachments[0].path.is_file()
    assert (saved[3].id, saved[3].status) == (answer.message.id, MessageStatus.INTERRUPTED)

    qtbot.mouseClick(answer.retry_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: answer.message.status == MessageStatus.COMPLETE, timeout=10_000)
    assert answer.message.text == DEFAULT_REPLY
    assert not answer.error_box.isVisible()
    assert answer.provenance.text().startswith("fake · ")
    first_try, retry = chats(command_log)
    assert retry.messages == first_try.messages  # the same conversation, re-sent whole
    assert [m.role for m in retry.messages] == ["user", "assistant", "user"]
    assert retry.messages[2].images == [str(saved[2].attachments[0].path)]
    reopened = Storage(paths.database_path())
    assert reopened.messages(conversation.id)[3].status == MessageStatus.COMPLETE
    reopened.close()


def test_an_engine_that_never_starts_gives_a_clear_error_and_a_restart_button(
    qtbot, make_window
) -> None:
    window = make_window(
        "--hang-handshake", start=False, handshake_timeout_ms=300, max_start_failures=2
    )
    window.send_message("Anyone there?")
    with qtbot.waitSignal(window.client.engine_failed, timeout=10_000):
        window.client.start()
    banner = window.chat_view.engine_banner
    assert "could not be started" in banner.label.text()
    assert banner.action.isVisible() and banner.action.text() == "Restart engine"
    assert window.status_bar.state.text() == "Engine failed"
    assert window.status_bar.restart_button.isVisible()
    answer = window.chat_view.messages.cards()[-1]
    assert answer.message.status == MessageStatus.INTERRUPTED
    assert answer.message.error_code == p.ErrorCode.ENGINE_DIED
    assert window.storage.messages(window.session.conversation_id)[0].text == "Anyone there?"
