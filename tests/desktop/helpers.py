"""Helpers shared by the desktop tests."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage, QPainter, QTextDocumentFragment
from PySide6.QtWidgets import QLabel

from engine import protocol as p

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
FAKE_MODEL = "fake-org/fake-vlm"


def sent_commands(log: Path) -> list[p.Command]:
    """What the fake engine read from the window, in order, across restarts."""
    if not log.exists():
        return []
    return [p.decode_command(line) for line in log.read_bytes().splitlines() if line.strip()]


def chats(log: Path) -> list[p.Chat]:
    return [c for c in sent_commands(log) if isinstance(c, p.Chat)]


def make_image(path: Path, color: str = "#3b82f6", size: tuple[int, int] = (120, 80)) -> Path:
    """A small PNG drawn with QPainter."""
    image = QImage(*size, QImage.Format.Format_RGB32)
    image.fill(QColor("#ffffff"))
    painter = QPainter(image)
    painter.fillRect(10, 10, size[0] - 20, size[1] - 20, QColor(color))
    painter.end()
    assert image.save(str(path))
    return path


def shown_text(label: QLabel) -> str:
    """What a label shows on screen: its text rendered as HTML where Qt renders it so."""
    from PySide6.QtGui import Qt as GuiQt  # mightBeRichText lives in QtGui's namespace

    form = label.textFormat()
    rich = form == Qt.TextFormat.RichText or (
        form == Qt.TextFormat.AutoText and GuiQt.mightBeRichText(label.text())
    )
    return QTextDocumentFragment.fromHtml(label.text()).toPlainText() if rich else label.text()
