"""The window with the real engine process and a tiny model: chat, kill -9, restart, Retry."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from desktop import paths
from desktop.engine_client import EngineClient
from desktop.main_window import MainWindow
from desktop.state import ModelCatalog, ModelChoice
from desktop.storage import MessageStatus, Storage
from tests.desktop.helpers import make_image


@pytest.fixture
def real_window(qtbot, settings, tiny_model, tmp_path: Path) -> Iterator[MainWindow]:
    """The window with a real engine process, a tiny LLaVA in NF4 on the CPU chosen."""
    storage = Storage(paths.database_path())
    client = EngineClient(restart_delay_ms=100, log_path=tmp_path / "engine.log")
    window = MainWindow(storage, client, ModelCatalog(settings), settings=settings)
    qtbot.addWidget(window)
    window.resize(1100, 760)
    window.set_model_choice(ModelChoice(str(tiny_model("llava")), "nf4", "cpu"))
    window.show()
    client.start()
    try:
        qtbot.waitUntil(client.is_ready, timeout=120_000)
        yield window
    finally:
        client.stop()
        storage.close()


def test_kill_9_mid_answer_restarts_the_real_engine_and_loses_nothing(
    qtbot, real_window: MainWindow, tmp_path: Path
) -> None:
    window, client = real_window, real_window.client
    image = make_image(tmp_path / "chart.png", "#2563eb", (160, 100))

    # Turn 1 completes: it is the "earlier history" that must survive.
    assert window.session.attach_files([image]) == []
    window.send_message("What is in this picture?")
    qtbot.waitUntil(lambda: not window.session.busy, timeout=120_000)
    first_answer = window.chat_view.messages.cards()[1].message
    assert first_answer.status == MessageStatus.COMPLETE and first_answer.text

    # Turn 2 is killed with SIGKILL as soon as its first token streams in.
    first_pid = client.engine_pid()
    killed: list[int] = []

    def kill_on_first_delta(job_id: str, text: str) -> None:
        if not killed:
            killed.append(client.engine_pid() or 0)
            os.kill(killed[0], signal.SIGKILL)

    client.delta_received.connect(kill_on_first_delta)
    with qtbot.waitSignal(client.engine_died, timeout=120_000):
        window.send_message("Describe it in detail, please.")
    client.delta_received.disconnect(kill_on_first_delta)
    assert killed == [first_pid]

    banner = window.chat_view.engine_banner
    assert banner.isVisible() and "restarting" in banner.label.text().lower()
    qtbot.waitUntil(client.is_ready, timeout=120_000)
    assert client.engine_pid() not in (None, first_pid)

    cards = window.chat_view.messages.cards()
    assert [c.message.role for c in cards] == ["user", "assistant", "user", "assistant"]
    assert cards[0].thumbnails is not None
    assert cards[1].message.text == first_answer.text
    assert cards[2].body.toPlainText() == "Describe it in detail, please."
    interrupted = cards[3]
    assert interrupted.message.status == MessageStatus.INTERRUPTED
    assert interrupted.retry_button.isVisible()

    saved = Storage(paths.database_path())  # what a restarted app would read
    conversation = saved.conversations()[0]
    stored = saved.messages(conversation.id)
    saved.close()
    assert [(m.role, m.status) for m in stored] == [
        ("user", MessageStatus.COMPLETE),
        ("assistant", MessageStatus.COMPLETE),
        ("user", MessageStatus.COMPLETE),
        ("assistant", MessageStatus.INTERRUPTED),
    ]
    assert stored[0].attachments[0].path.is_file()
    assert stored[2].text == "Describe it in detail, please."

    # Retry: the new engine loads the model again and answers the same conversation.
    qtbot.mouseClick(interrupted.retry_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: interrupted.message.status == MessageStatus.COMPLETE, timeout=120_000)
    assert interrupted.message.text
    assert "nf4" in interrupted.provenance.text()
    shots = Path(os.environ.get("VISIONDESK_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    assert window.grab().save(str(shots / "e2e-after-restart.png"))


def test_an_edit_answers_as_a_fresh_conversation_would_with_the_real_engine(
    qtbot, real_window: MainWindow, tmp_path: Path
) -> None:
    """The engine keeps the last conversation's cache; an edited first message must not be
    answered from what the replaced turns left in it (greedy: the answers are equal)."""
    window = real_window
    image = make_image(tmp_path / "chart.png", "#16a34a", (160, 100))

    def answer(text: str, attachments: list[Path] | None = None) -> str:
        assert window.send_message(text, attachments)
        qtbot.waitUntil(lambda: not window.session.busy, timeout=120_000)
        last = window.session.messages[-1]
        assert last.status == MessageStatus.COMPLETE, last.error_message
        return last.text

    answer("What is in this picture?", [image])
    answer("Describe it in detail, please.")
    assert window.edit_message(window.session.messages[0].id)
    window.chat_view.composer.edit.setPlainText("Which colour is it?")
    window.chat_view.composer.send_button.click()
    qtbot.waitUntil(lambda: not window.session.busy, timeout=120_000)
    edited = window.session.messages
    assert [m.text for m in edited if m.role == "user"] == ["Which colour is it?"]
    assert edited[-1].status == MessageStatus.COMPLETE
    # The picture and the template before the edited words were reused; the words were not.
    reused = edited[-1].provenance
    assert 0 < reused["cached_tokens"] < reused["prompt_tokens"]

    window.session.new_conversation()
    fresh = answer("Which colour is it?", [image])
    assert fresh == edited[-1].text

    # Unload gives the model's memory back; the status bar says so and the next question
    # loads it again.
    bar = window.status_bar
    qtbot.waitUntil(lambda: bar.unload_button.isVisible(), timeout=30_000)
    assert "nf4" in bar.model.text()
    bar.unload_button.click()
    qtbot.waitUntil(lambda: window.engine_status.loaded is None, timeout=30_000)
    assert bar.model.text() == "No model loaded" and not bar.unload_button.isVisible()
    window.session.new_conversation()
    assert answer("Which colour is it?", [image]) == fresh
    qtbot.waitUntil(lambda: window.engine_status.loaded is not None, timeout=30_000)

    # "Free the memory after … idle" does the same by itself once the model sits idle.
    combo = window.settings_view.idle_combo
    combo.setCurrentIndex(combo.findData("5"))
    assert window.idle_unload.interval() == 5 * 60_000 and window.idle_unload.isActive()
    window.idle_unload.setInterval(200)  # five minutes, shortened for the test
    qtbot.waitUntil(lambda: window.engine_status.loaded is None, timeout=30_000)
    assert not window.idle_unload.isActive()


@pytest.mark.qt_log_ignore("propagateSizeHints", "Corrupt JPEG data")  # the cut-off thumbnail
def test_a_picture_the_engine_cannot_read_is_named_and_left_out_of_later_questions(
    qtbot, real_window: MainWindow, tmp_path: Path
) -> None:
    """A JPEG cut off halfway has a readable header, so it is attached; the engine cannot
    decode it. The error names the file as the person attached it, and the next question (no
    picture) is answered instead of failing on the same picture again."""
    from PIL import Image

    window, session = real_window, real_window.session
    whole = tmp_path / "whole.jpg"
    Image.effect_noise((160, 120), 64).convert("RGB").save(whole)
    scan = tmp_path / "scan.jpg"
    scan.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert session.attach_files([scan]) == []
    stored = session.draft_attachments[0].path.name

    assert window.send_message("What does it say?")
    qtbot.waitUntil(lambda: not session.busy, timeout=120_000)
    failed = session.messages[1]
    assert failed.status == MessageStatus.ERROR and failed.error_code == "bad_input"
    assert "scan.jpg is damaged" in failed.error_message and stored not in failed.error_message
    assert "Later questions in this conversation go without it." in failed.error_message

    assert window.send_message("Never mind the picture: say hello.")
    qtbot.waitUntil(lambda: not session.busy, timeout=120_000)
    assert session.messages[-1].status == MessageStatus.COMPLETE, session.messages[-1].error_message

    saved = Storage(paths.database_path())  # a restarted app leaves the picture out too
    stored_failed = saved.messages(session.conversation_id)[1]
    saved.close()
    assert stored_failed.provenance["unreadable_pictures"] == [
        session.messages[0].attachments[0].sha256
    ]


def test_a_pdf_dropped_on_the_chat_goes_as_pictures_of_its_first_pages(
    qtbot, real_window: MainWindow, tmp_path: Path
) -> None:
    from tests.engine.sample_documents import write_pdf

    window, session = real_window, real_window.session
    report = write_pdf(tmp_path / "report.pdf", [[f"Page {n} total {n * 7}"] for n in range(1, 7)])
    session.attach_files([report])
    assert not window.send_message("Too early")  # the pages are not there yet: wait
    assert "being prepared" in window.chat_view.notice.label.text()
    qtbot.waitUntil(lambda: len(session.draft_attachments) == 4, timeout=60_000)
    assert [a.name for a in session.draft_attachments] == [f"report p{n}.png" for n in range(1, 5)]
    notice = window.chat_view.notice.label.text()
    assert "pages 1–4 of 6 from report.pdf" in notice and "Extract" in notice
    assert len(window.chat_view.composer.chips()) == 4

    assert window.send_message("What is the total on the last page?")
    qtbot.waitUntil(lambda: not session.busy, timeout=120_000)
    asked, answer = session.messages
    assert answer.status == MessageStatus.COMPLETE, answer.error_message
    assert [a.name for a in asked.attachments] == [f"report p{n}.png" for n in range(1, 5)]
    assert all(a.path.is_file() and a.path.suffix == ".png" for a in asked.attachments)

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 nothing else")
    session.attach_files([broken])
    qtbot.waitUntil(lambda: "Not attached: broken.pdf" in window.chat_view.notice.label.text())
    assert session.draft_attachments == []
