"""The main window with the fake engine: attachments, streaming, Stop, errors, keyboard."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage
from PySide6.QtWidgets import QApplication

from desktop import paths
from desktop.state import ModelChoice
from desktop.storage import MessageStatus, Storage
from engine import protocol as p
from tests.desktop.fake_engine import DEFAULT_REPLY
from tests.desktop.helpers import FAKE_MODEL, chats, make_image, sent_commands


def drop_files(qtbot, widget, files: list[Path]) -> QDropEvent:
    """A real drag-enter and drop on ``widget``, as a file manager would send them."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
    centre = widget.rect().center()
    enter = QDragEnterEvent(
        centre,
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    drop = QDropEvent(
        QPointF(centre),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(widget, drop)
    return drop


def answer_card(window):
    return window.chat_view.messages.cards()[-1]


def test_dropping_an_image_on_the_chat_attaches_it_with_a_thumbnail(
    qtbot, make_window, tmp_path: Path, data_dir: Path
) -> None:
    window = make_window(start=False)
    image = make_image(tmp_path / "cat.png")
    drop = drop_files(qtbot, window.chat_view, [image])
    assert drop.isAccepted()
    [attachment] = window.session.draft_attachments
    assert attachment.name == "cat.png"
    assert attachment.path.parent == data_dir / "attachments"
    assert attachment.path.read_bytes() == image.read_bytes()
    [chip] = window.chat_view.composer.chips()
    assert chip.isVisible()
    pixmap = chip.thumbnail.pixmap()
    assert not pixmap.isNull() and max(pixmap.width(), pixmap.height()) == 64


def test_dropping_a_file_that_is_not_an_image_explains_why_it_was_skipped(
    qtbot, make_window, tmp_path: Path
) -> None:
    window = make_window(start=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    drop_files(qtbot, window.chat_view, [notes])
    assert window.session.draft_attachments == []
    assert window.chat_view.notice.isVisible()
    assert "notes.txt" in window.chat_view.notice.label.text()


@pytest.mark.qt_log_ignore("propagateSizeHints", "JPEG datastream contains no image")
def test_pictures_the_window_draws_but_the_models_cannot_read_are_not_attached(
    qtbot, make_window, tmp_path: Path
) -> None:
    """Qt draws SVG and XBM (a thumbnail would look fine), the engine cannot open them; a JPEG
    cut off before its size is known is refused too."""
    window = make_window(start=False)
    logo = tmp_path / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    fine = make_image(tmp_path / "fine.png")
    drop_files(qtbot, window.chat_view, [logo, cut, fine])
    assert [a.name for a in window.session.draft_attachments] == ["fine.png"]
    notice = window.chat_view.notice.label.text()
    assert "logo.svg (SVG pictures cannot be read by the models" in notice
    assert "cut.jpg (damaged" in notice


def test_a_picture_claiming_too_many_pixels_is_not_attached(
    qtbot, make_window, tmp_path: Path
) -> None:
    import struct
    import zlib

    window = make_window(start=False)

    # A PNG whose header claims 30000 × 30000 pixels (a decompression bomb's trick): only the
    # header is read, so nothing of that size is ever decoded.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    bomb = tmp_path / "huge.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )
    fine = make_image(tmp_path / "fine.png")
    drop_files(qtbot, window.chat_view, [bomb, fine])
    assert [a.name for a in window.session.draft_attachments] == ["fine.png"]
    notice = window.chat_view.notice.label.text()
    assert "huge.png (30000×30000 pixels" in notice and "fine.png" not in notice
    assert not any(window.storage.attachments_dir.glob("*huge*"))


def test_a_pasted_image_is_written_to_a_png_and_attached(qtbot, make_window) -> None:
    window = make_window(start=False)
    image = QImage(40, 30, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.red)
    mime = QMimeData()
    mime.setImageData(image)
    window.chat_view.composer.edit.insertFromMimeData(mime)
    [attachment] = window.session.draft_attachments
    assert attachment.path.suffix == ".png"
    assert QImage(str(attachment.path)).size() == image.size()
    assert any(paths.cache_dir().glob("pasted-*.png"))
    assert window.chat_view.composer.edit.toPlainText() == ""


def test_deltas_stream_into_the_answer_and_it_shows_who_answered(
    qtbot, make_window, tmp_path: Path, command_log: Path
) -> None:
    window = make_window("--delay", "0.03")
    image = make_image(tmp_path / "chart.png")
    qtbot.keyClicks(window.chat_view.composer.edit, "What is this?")
    drop_files(qtbot, window.chat_view, [image])
    qtbot.keyClick(window.chat_view.composer.edit, Qt.Key.Key_Return)
    assert window.chat_view.composer.edit.toPlainText() == ""
    card = answer_card(window)
    # Part of the answer is on screen while the rest is still coming.
    qtbot.waitUntil(lambda: "Here is" in card.body.toPlainText(), timeout=10_000)
    assert window.session.busy
    assert window.chat_view.composer.send_button.text() == "Stop"
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    assert "print('hello')" in card.body.toPlainText()  # the code block
    assert card.message.status == MessageStatus.COMPLETE
    assert card.provenance.text().startswith(f"fake · {FAKE_MODEL} · nf4 · cuda:0")
    assert "42.0 tok/s · first token 85 ms" in card.provenance.text()
    assert "reused" not in card.provenance.text()  # a first turn reuses nothing
    [chat] = chats(command_log)
    assert chat.model == FAKE_MODEL
    assert chat.messages == [p.ChatMessage("user", "What is this?", [str(card_image(window))])]


def card_image(window) -> Path:
    return window.chat_view.messages.cards()[0].message.attachments[0].path


def test_streaming_repaints_on_a_timer_not_per_token(qtbot, make_window) -> None:
    window = make_window(start=False)
    updates: list[str] = []
    window.session.message_updated.connect(lambda m: updates.append(m.text))
    before = window.client.open_jobs()  # the tool pages may have asked the engine things too
    window.session.send("Hi")
    [job_id] = window.client.open_jobs() - before
    for _ in range(300):
        window.client.delta_received.emit(job_id, "x")
    assert updates == []  # nothing painted synchronously
    qtbot.waitUntil(lambda: bool(updates), timeout=2000)
    qtbot.wait(120)
    assert updates == ["x" * 300]


def test_stop_sends_cancel_and_keeps_the_partial_answer(
    qtbot, make_window, command_log: Path
) -> None:
    window = make_window("--delay", "0.05")
    window.send_message("Describe the picture")
    card = answer_card(window)
    qtbot.waitUntil(lambda: bool(card.message.text), timeout=10_000)
    qtbot.keyClick(window.chat_view.composer.edit, Qt.Key.Key_Escape)
    button = window.chat_view.composer.send_button
    assert (button.text(), button.isEnabled()) == ("Stopping…", False)  # until the engine says
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    assert button.isEnabled()
    [job_id] = {c.job_id for c in chats(command_log)}
    assert p.Cancel(job_id=job_id) in sent_commands(command_log)
    assert card.message.status == MessageStatus.CANCELLED
    assert 0 < len(card.message.text) < len(DEFAULT_REPLY)
    assert "stopped" in card.provenance.text()
    assert window.chat_view.composer.send_button.text() == "Send"
    stored = window.storage.messages(window.session.conversation_id)[-1]
    assert (stored.status, stored.text) == (MessageStatus.CANCELLED, card.message.text)


def test_an_engine_error_shows_its_sentence_on_the_answer(qtbot, make_window) -> None:
    sentence = "The model does not fit in GPU memory. Choose 4-bit quantisation."
    window = make_window("--error-on-chat", f"out_of_memory:{sentence}")
    window.send_message("Hi")
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    card = answer_card(window)
    assert card.message.status == MessageStatus.ERROR
    assert card.error_box.isVisible() and card.retry_button.isVisible()
    assert sentence in card.error_label.text()


def test_garbage_from_the_engine_does_not_break_the_window(qtbot, make_window) -> None:
    window = make_window("--garbage")
    rejected: list[str] = []
    window.client.line_rejected.connect(rejected.append)
    window.send_message("Still there?")
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    assert answer_card(window).message.text == DEFAULT_REPLY
    assert len(rejected) >= 4
    assert window.isVisible() and window.client.is_ready()


def test_without_a_model_the_empty_chat_leads_to_the_models_page(qtbot, make_window) -> None:
    window = make_window(start=False, model=None)
    button = window.chat_view.empty_state.models_button
    assert button.isVisible()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert window.current_page() == "models"
    window.set_model_choice(ModelChoice(FAKE_MODEL))
    assert not button.isVisible()  # a model is chosen: the three steps are enough


def test_sending_without_a_model_asks_for_one_and_stores_nothing(qtbot, make_window) -> None:
    window = make_window(start=False, model=None)
    assert not window.send_message("Hello?")
    assert "Choose a model" in window.chat_view.notice.label.text()
    assert window.storage.conversations() == []
    assert window.chat_view.composer.edit.toPlainText() == "Hello?"  # the draft is kept


def test_keyboard_shift_enter_breaks_the_line_and_ctrl_n_starts_a_new_chat(
    qtbot, make_window
) -> None:
    window = make_window()
    edit = window.chat_view.composer.edit
    qtbot.keyClicks(edit, "line one")
    qtbot.keyClick(edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(edit, "line two")
    assert edit.toPlainText() == "line one\nline two"
    qtbot.keyClick(edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    first = window.session.conversation_id
    assert [m.text for m in window.storage.messages(first)][0] == "line one\nline two"
    window.new_action.trigger()
    assert window.session.conversation_id == ""
    assert window.chat_view.stack.currentWidget() is window.chat_view.empty_state
    window.conversation_list.list.setCurrentRow(0)
    assert window.session.conversation_id == first
    assert len(window.chat_view.messages.cards()) == 2


def test_the_window_shows_before_the_engine_answers_and_the_status_bar_follows(
    qtbot, make_window
) -> None:
    window = make_window(start=False)
    assert window.isVisible()
    assert window.status_bar.state.text() == "Engine stopped"
    window.client.start()
    assert window.status_bar.state.text() == "Starting engine…"
    qtbot.waitUntil(window.client.is_ready, timeout=10_000)
    window.set_model_choice(ModelChoice(FAKE_MODEL, "nf4", "cuda"))
    window.send_message("Load it")
    qtbot.waitUntil(lambda: window.engine_status.loaded is not None, timeout=10_000)
    qtbot.waitUntil(lambda: window.status_bar.state.text() == "Ready", timeout=10_000)
    assert window.status_bar.device.text() == "Fake GPU"
    assert window.status_bar.model.text() == "fake-vlm · nf4 · CUDA graphs"
    assert window.status_bar.vram.text() == "VRAM 3.0 / 24.0 GB"


def test_stored_conversations_reopen_with_their_messages(qtbot, make_window) -> None:
    storage = Storage(paths.database_path())
    conversation = storage.create_conversation("Old chat")
    storage.add_message(conversation.id, "user", "Earlier question")
    storage.add_message(conversation.id, "assistant", "Earlier **answer**")
    storage.close()
    window = make_window(start=False)
    assert window.session.conversation_id == conversation.id
    texts = [card.body.toPlainText() for card in window.chat_view.messages.cards()]
    assert texts == ["Earlier question", "Earlier answer"]
    assert window.windowTitle() == "Old chat — VisionDesk"
    assert window.conversation_list.list.item(0).text() == "Old chat"


def test_the_footer_says_how_much_of_a_follow_up_was_reused() -> None:
    from desktop.storage import Message
    from desktop.views.message_card import provenance_parts

    message = Message(id="a", conversation_id="c", role="assistant", text="Blue.")
    message.provenance = {
        "backend": "local",
        "model": "m",
        "tokens_per_s": 150.2,
        "time_to_first_token_s": 1.5,
        "prompt_tokens": 638,
        "cached_tokens": 599,
    }
    assert provenance_parts(message) == [
        "local",
        "m",
        "150.2 tok/s",
        "first token 1.5 s",
        "599 of 638 prompt tokens reused",
    ]
    message.provenance = {"backend": "local", "model": "m", "adapter": "/runs/run-7/adapter"}
    assert provenance_parts(message) == ["local", "m", "adapter run-7"]


def test_shortcuts_act_on_the_page_on_screen(qtbot, make_window, monkeypatch) -> None:
    window = make_window("--delay", "0.05")
    opened: list[str] = []
    monkeypatch.setattr(window.extract_view, "choose_files", lambda: opened.append("extract"))
    monkeypatch.setattr(window, "choose_attachments", lambda: opened.append("chat"))
    window.show_page("extract")
    window.attach_action.trigger()  # Ctrl+O on Extract: documents to read
    assert opened == ["extract"] and window.current_page() == "extract"
    window.show_page("models")
    window.attach_action.trigger()  # elsewhere: pictures for the chat
    assert opened == ["extract", "chat"] and window.current_page() == "chat"

    window.send_message("Describe the picture")
    window.show_page("search")
    window.stop_action.trigger()  # Esc on another page leaves the answer alone
    assert window.session.busy
    window.find_action.trigger()  # Ctrl+F: that page's find box
    assert window.search_view.query_edit.hasFocus()
    window.new_action.trigger()  # Ctrl+N from anywhere: a new chat, on screen
    assert window.current_page() == "chat" and window.session.conversation_id == ""
    window.find_action.trigger()
    assert window.conversation_list.filter.hasFocus()
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    stored = window.storage.messages(window.storage.conversations()[0].id)
    assert stored[-1].status == MessageStatus.COMPLETE  # never stopped
