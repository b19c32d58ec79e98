"""Where the user writes: the text box (Enter sends), the draft's thumbnails, Attach and Send/Stop."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, Qt, Signal
from PySide6.QtGui import QImage, QKeyEvent, QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.storage import Attachment
from desktop.views.style import set_style_property
from desktop.views.thumbnails import AttachmentChip

_MAX_LINES = 8


def local_files(mime: QMimeData) -> list[Path]:
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]


class ComposerEdit(QPlainTextEdit):
    """Enter or Ctrl+Enter submits, Shift+Enter breaks the line, Esc stops; pasted images and
    files become attachments instead of text."""

    submitted = Signal()
    escape_pressed = Signal()
    edit_last_requested = Signal()  # Up in an empty composer: edit the last message sent
    image_pasted = Signal(QImage)
    files_pasted = Signal(list)  # list[Path]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composerEdit")
        self.setTabChangesFocus(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self._placeholders: tuple[str, ...] = ()
        self.document().contentsChanged.connect(self._fit_height)
        self._fit_height()

    def set_placeholders(self, *texts: str) -> None:
        """Show the first of ``texts`` (longest first) that fits on the one line the empty box
        has; the last, shortened, when none does. A wrapped placeholder would be cut in half."""
        self._placeholders = texts
        self._fit_placeholder()

    def _fit_placeholder(self) -> None:
        if not self._placeholders:
            return
        metrics = self.fontMetrics()
        # The cursor's width and a little room, as the placeholder wraps a few pixels early.
        room = self.viewport().width() - int(self.document().documentMargin() * 2) - 6
        fitting = [text for text in self._placeholders if metrics.horizontalAdvance(text) <= room]
        text = fitting[0] if fitting else self._placeholders[-1]
        if not fitting:
            text = metrics.elidedText(text, Qt.TextElideMode.ElideRight, max(room, 0))
        if text != self.placeholderText():
            self.setPlaceholderText(text)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_placeholder()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key, modifiers = event.key(), event.modifiers()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if modifiers & Qt.KeyboardModifier.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.submitted.emit()
            return
        if key == Qt.Key.Key_Escape:
            self.escape_pressed.emit()
            return
        if key == Qt.Key.Key_Up and not modifiers and self.document().isEmpty():
            self.edit_last_requested.emit()
            return
        super().keyPressEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return (
            source.hasImage() or bool(local_files(source)) or super().canInsertFromMimeData(source)
        )

    def insertFromMimeData(self, source: QMimeData) -> None:
        files = local_files(source)
        if files:
            self.files_pasted.emit(files)
        elif source.hasImage():
            image = QImage(source.imageData())
            if not image.isNull():
                self.image_pasted.emit(image)
        else:
            super().insertFromMimeData(source)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._fit_height()  # the theme's font arrives after construction
            self._fit_placeholder()

    def _fit_height(self) -> None:
        lines = max(1, min(_MAX_LINES, int(self.document().size().height())))
        line_height = self.fontMetrics().lineSpacing()
        margins = self.contentsMargins()
        frame = int(self.document().documentMargin() * 2) + margins.top() + margins.bottom() + 2
        self.setFixedHeight(lines * line_height + frame)
        full = int(self.document().size().height()) > _MAX_LINES
        policy = (
            Qt.ScrollBarPolicy.ScrollBarAsNeeded if full else Qt.ScrollBarPolicy.ScrollBarAlwaysOff
        )
        self.setVerticalScrollBarPolicy(policy)


class Composer(QFrame):
    send_requested = Signal(str)
    stop_requested = Signal()
    attach_requested = Signal()
    attachment_removed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composer")
        self._busy = False
        self._chips: list[AttachmentChip] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.setSpacing(8)
        self.tray = QWidget()
        self.tray.setObjectName("attachmentTray")
        self._tray_layout = QHBoxLayout(self.tray)
        self._tray_layout.setContentsMargins(0, 0, 0, 0)
        self._tray_layout.setSpacing(10)
        self._tray_layout.addStretch(1)
        self.tray.hide()
        layout.addWidget(self.tray)
        row = QHBoxLayout()
        row.setSpacing(8)
        self.attach_button = QToolButton()
        self.attach_button.setObjectName("attachButton")
        self.attach_button.setText("+")
        self.attach_button.setAccessibleName("Attach images")  # read aloud instead of "+"
        self.attach_button.setToolTip("Attach images (Ctrl+O). You can also drop or paste them.")
        self.attach_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.attach_button.clicked.connect(self.attach_requested)
        row.addWidget(self.attach_button, 0, Qt.AlignmentFlag.AlignBottom)
        self.edit = ComposerEdit()
        self.edit.set_placeholders(
            "Ask about an image…  (Enter to send, Shift+Enter for a new line)",
            "Ask about an image…",
        )
        self.edit.setToolTip("Enter sends, Shift+Enter starts a new line, Esc stops an answer.")
        self.edit.submitted.connect(self._on_edit_submitted)
        self.edit.escape_pressed.connect(self.stop_requested)
        row.addWidget(self.edit, 1)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("sendButton")
        self.send_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.send_button.clicked.connect(self._on_send_button_clicked)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        layout.addLayout(row)
        self.set_busy(False)

    def text(self) -> str:
        return self.edit.toPlainText()

    def clear_text(self) -> None:
        self.edit.clear()

    def set_busy(self, busy: bool) -> None:
        """While an answer streams, the button stops it instead of sending."""
        self._busy = busy
        self.send_button.setEnabled(True)
        self.send_button.setText("Stop" if busy else "Send")
        self.send_button.setToolTip("Stop the answer (Esc)" if busy else "Send (Enter)")
        set_style_property(self.send_button, "stop", busy)

    def set_stopping(self) -> None:
        """A stop was asked for: the button says so until the engine confirms (a busy engine
        can take a moment; a hung one is restarted)."""
        self.send_button.setText("Stopping…")
        self.send_button.setEnabled(False)

    def set_attachments(self, attachments: list[Attachment]) -> None:
        for chip in self._chips:
            chip.setParent(None)
            chip.deleteLater()
        self._chips = []
        for index, attachment in enumerate(attachments):
            chip = AttachmentChip(attachment.path, attachment.name)
            chip.remove_clicked.connect(lambda i=index: self.attachment_removed.emit(i))
            self._tray_layout.insertWidget(index, chip)
            self._chips.append(chip)
        self.tray.setVisible(bool(attachments))

    def chips(self) -> list[AttachmentChip]:
        return list(self._chips)

    def _on_edit_submitted(self) -> None:
        if not self._busy:
            self.send_requested.emit(self.text())

    def _on_send_button_clicked(self) -> None:
        if self._busy:
            self.stop_requested.emit()
        else:
            self.send_requested.emit(self.text())
