"""The conversation list: search, rename in place, delete from the keyboard, Markdown export."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit, QMessageBox

from desktop import paths
from desktop.conversation_export import export_markdown
from desktop.storage import MessageStatus, Storage
from tests.desktop.helpers import make_image


def titles(window) -> list[str]:
    shown = window.conversation_list.list
    return [shown.item(row).text() for row in range(shown.count())]


def filled_window(make_window):
    """The window over three stored conversations, as the app opens on them."""
    storage = Storage(paths.database_path())
    fill(storage)
    storage.close()
    return make_window(start=False)


def fill(storage: Storage) -> None:
    receipt = storage.create_conversation("Receipt from the hardware store")
    storage.add_message(receipt.id, "user", "What is the total?")
    chart = storage.create_conversation("Quarterly chart")
    storage.add_message(chart.id, "user", "Which quarter grew the most? 100% honest")
    storage.create_conversation("Mushroom")


def test_searching_finds_titles_and_message_text(qtbot, make_window) -> None:
    window = filled_window(make_window)
    assert titles(window) == ["Mushroom", "Quarterly chart", "Receipt from the hardware store"]
    search = window.conversation_list.filter
    qtbot.keyClicks(search, "TOTAL")  # a message's words, any case
    assert titles(window) == ["Receipt from the hardware store"]
    search.setText("100%")  # % and _ are the person's characters, not patterns
    assert titles(window) == ["Quarterly chart"]
    search.setText("1_0")
    assert titles(window) == [] and window.conversation_list.empty.isVisible()
    search.clear()
    assert len(titles(window)) == 3 and not window.conversation_list.empty.isVisible()


def test_f2_renames_in_place_and_an_empty_name_keeps_the_old_one(qtbot, make_window) -> None:
    window = filled_window(make_window)
    shown = window.conversation_list.list
    shown.setCurrentRow(1)
    assert window.windowTitle() == "Quarterly chart — VisionDesk"
    qtbot.keyClick(shown, Qt.Key.Key_F2)
    editor = shown.findChild(QLineEdit)
    assert isinstance(editor, QLineEdit) and editor.text() == "Quarterly chart"
    editor.selectAll()
    qtbot.keyClicks(editor, "  Revenue   2024 ")
    qtbot.keyClick(editor, Qt.Key.Key_Return)  # the view commits it on its next turn
    conversation_id = window.session.conversation_id
    qtbot.waitUntil(lambda: "Revenue 2024" in titles(window), timeout=2000)
    assert window.storage.conversation(conversation_id).title == "Revenue 2024"
    assert "Revenue 2024" in titles(window)
    assert window.windowTitle() == "Revenue 2024 — VisionDesk"

    window.conversation_list.rename(conversation_id)
    editor = shown.findChild(QLineEdit)
    editor.selectAll()
    qtbot.keyClick(editor, Qt.Key.Key_Delete)
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: shown.findChild(QLineEdit) is None or not editor.isVisible())
    qtbot.wait(20)
    assert window.storage.conversation(conversation_id).title == "Revenue 2024"
    assert "Revenue 2024" in titles(window)


def test_the_delete_key_asks_then_deletes_the_selected_conversation(
    qtbot, make_window, monkeypatch
) -> None:
    window = filled_window(make_window)
    asked: list[str] = []

    def answer(_parent, _title, text, *args, **kwargs):
        asked.append(text)
        return QMessageBox.StandardButton.No if len(asked) == 1 else QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", answer)
    shown = window.conversation_list.list
    shown.setCurrentRow(0)
    qtbot.keyClick(shown, Qt.Key.Key_Delete)  # "No": nothing happens
    assert len(titles(window)) == 3
    qtbot.keyClick(shown, Qt.Key.Key_Delete)
    assert titles(window) == ["Quarterly chart", "Receipt from the hardware store"]
    assert len(asked) == 2 and len(window.storage.conversations()) == 2


def test_a_conversation_exports_to_markdown_with_its_pictures_beside_it(
    tmp_path: Path,
) -> None:
    storage = Storage(tmp_path / "data" / "chats.sqlite3")
    conversation = storage.create_conversation("Two charts")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first = storage.import_attachment(make_image(tmp_path / "a" / "chart.png", "#ff0000"))
    second = storage.import_attachment(make_image(tmp_path / "b" / "chart.png", "#00ff00"))
    storage.add_message(conversation.id, "user", "Compare these.", [first, second])
    answer = storage.add_message(conversation.id, "assistant", "The **left** one is red.")
    answer.provenance = {"model": "/models/Qwen2-VL-7B-Instruct"}
    storage.save_message(answer)
    storage.add_message(conversation.id, "user", "And the right one?", [first])
    stopped = storage.add_message(conversation.id, "assistant", "Green, I thi")
    stopped.status = MessageStatus.CANCELLED
    storage.save_message(stopped)

    written = export_markdown(storage, conversation.id, tmp_path / "out" / "Two charts.md")
    text = written.read_text(encoding="utf-8")
    assert text.startswith("# Two charts\n")
    assert "## You\n\n" in text and "## Assistant (Qwen2-VL-7B-Instruct)" in text
    assert "The **left** one is red." in text and "*Stopped before the end.*" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == [
        "Two%20charts-images/chart.png",
        "Two%20charts-images/chart-2.png",
        "Two%20charts-images/chart.png",  # the same picture again: one file
    ]
    files = [written.parent / unquote(link) for link in links]
    assert files[0].read_bytes() == first.path.read_bytes()
    assert files[1].read_bytes() == second.path.read_bytes()
    assert sorted(p.name for p in (written.parent / "Two charts-images").iterdir()) == [
        "chart-2.png",
        "chart.png",
    ]
    storage.close()


def test_export_from_the_list_asks_where_and_says_where_it_went(
    qtbot, make_window, monkeypatch, tmp_path: Path
) -> None:
    from PySide6.QtWidgets import QFileDialog

    window = filled_window(make_window)
    offered: list[str] = []

    def save_as(_parent, _title, suggested, _filter):
        offered.append(suggested)
        return str(tmp_path / "out" / "receipt.md"), "Markdown (*.md)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_as)
    receipt = window.storage.conversations("hardware")[0]
    window.conversation_list.export_requested.emit(receipt.id)
    assert Path(offered[0]).name == "Receipt from the hardware store.md"
    written = tmp_path / "out" / "receipt.md"
    assert "What is the total?" in written.read_text(encoding="utf-8")
    assert str(written) in window.chat_view.notice.label.text()
