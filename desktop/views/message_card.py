"""One message on screen: a user bubble or an answer card with Markdown, provenance and actions."""

from __future__ import annotations

import html
import math
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desktop.storage import Message, MessageStatus
from desktop.views import markdown
from desktop.views.style import set_style_property
from desktop.views.thumbnails import Thumbnail

_THUMBNAIL = 160


class RichText(QTextBrowser):
    """Read-only rich text that is exactly as tall as its content (no scroll bar of its own)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setOpenLinks(False)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.document().setDocumentMargin(0)
        self.viewport().setAutoFillBackground(False)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.DefaultContextMenu)
        self._fitted: tuple[int, bool, int] | None = None  # (max_width, shrink, width) laid out
        self.document().contentsChanged.connect(self._on_document_contents_changed)

    def fit(self, max_width: int, shrink: bool) -> int:
        """Lay out for ``max_width``; with ``shrink``, as narrow as the text allows. Returns width.

        Laying out a long answer is the costly part of showing it, so the same width for the
        same text is not laid out again.
        """
        if self._fitted is not None and self._fitted[:2] == (max_width, shrink):
            return self._fitted[2]
        document = self.document()
        document.setTextWidth(max_width)
        width = max_width
        if shrink:
            width = min(max_width, math.ceil(document.idealWidth()) + 2)
            if width != max_width:
                document.setTextWidth(width)
        self.setFixedSize(max(width, 1), max(1, math.ceil(document.size().height())))
        self._fitted = (max_width, shrink, width)
        return width

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._fitted = None  # the same width may now need another height

    @Slot()
    def _on_document_contents_changed(self) -> None:
        self._fitted = None


class MessageCard(QFrame):
    """Built once per message; ``update_message`` refreshes it as the answer streams in."""

    retry_clicked = Signal(str)  # message id
    edit_clicked = Signal(str)  # message id (a user message)
    regenerate_clicked = Signal(str)  # message id (the last answer)

    def __init__(
        self, message: Message, parent: QWidget | None = None, *, width: int = 600
    ) -> None:
        """``width`` is the message list's: the card is laid out for it once, when built."""
        super().__init__(parent)
        self.message = message
        self.is_user = message.role == "user"
        self.setObjectName("userBubble" if self.is_user else "answerCard")
        self._available_width = width
        self._activity = ""
        self.is_last = False  # the conversation's last message: only its answer regenerates
        # How the message list places it: the user's own messages sit on the right.
        self.alignment = Qt.AlignmentFlag.AlignRight if self.is_user else Qt.AlignmentFlag(0)
        layout = self._layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 10)
        layout.setSpacing(6)
        if not self.is_user:
            self.author = QLabel("Assistant")
            self.author.setObjectName("author")
            layout.addWidget(self.author)
        self.thumbnails = self._build_thumbnails(message)
        if self.thumbnails is not None:
            layout.addWidget(self.thumbnails)
        self.body = RichText()
        self.body.anchorClicked.connect(self._on_body_anchor_clicked)
        layout.addWidget(self.body)
        self.activity = QLabel()
        self.activity.setObjectName("activity")
        layout.addWidget(self.activity)
        self.error_box, self.error_label, self.retry_button = self._build_error_box()
        layout.addWidget(self.error_box)
        self.footer, self.provenance, self.copy_button = self._build_footer()
        layout.addWidget(self.footer)
        self.update_message(message)

    # -- building -------------------------------------------------------------------------

    def _build_thumbnails(self, message: Message) -> QWidget | None:
        if not message.attachments:
            return None
        row = QWidget()
        row.setObjectName("thumbnailRow")
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(8)
        for attachment in message.attachments:
            box.addWidget(Thumbnail(attachment.path, _THUMBNAIL, attachment.name))
        box.addStretch(1)
        return row

    def _build_error_box(self) -> tuple[QFrame, QLabel, QPushButton]:
        box = QFrame()
        box.setObjectName("errorBox")
        row = QHBoxLayout(box)
        row.setContentsMargins(10, 8, 10, 8)
        label = QLabel()
        label.setObjectName("errorText")
        label.setTextFormat(Qt.TextFormat.RichText)  # its text is escaped HTML, tags or not
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(label, 1)
        retry = QPushButton("Retry")
        retry.setObjectName("retryButton")
        retry.setCursor(Qt.CursorShape.PointingHandCursor)
        retry.clicked.connect(lambda: self.retry_clicked.emit(self.message.id))
        row.addWidget(retry, 0, Qt.AlignmentFlag.AlignTop)
        return box, label, retry

    def _build_footer(self) -> tuple[QWidget, QLabel, QPushButton]:
        footer = QWidget()
        row = QHBoxLayout(footer)
        row.setContentsMargins(0, 0, 0, 0)
        provenance = QLabel()
        provenance.setObjectName("provenance")
        provenance.setTextFormat(Qt.TextFormat.PlainText)  # model names and paths, as they are
        provenance.setWordWrap(True)  # a long model path wraps rather than cutting the rest off
        row.addWidget(provenance, 1)
        self.edit_button = self._link_button("Edit", "Change this message and ask again")
        self.edit_button.clicked.connect(lambda: self.edit_clicked.emit(self.message.id))
        row.addWidget(self.edit_button)
        self.regenerate_button = self._link_button("Regenerate", "Answer this again (Ctrl+R)")
        self.regenerate_button.clicked.connect(
            lambda: self.regenerate_clicked.emit(self.message.id)
        )
        row.addWidget(self.regenerate_button)
        copy = self._link_button("Copy", "Copy the answer as Markdown")
        copy.clicked.connect(self._on_copy_clicked)
        row.addWidget(copy)
        return footer, provenance, copy

    @staticmethod
    def _link_button(text: str, tooltip: str) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName("linkButton")
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.setToolTip(tooltip)
        return button

    # -- updating -------------------------------------------------------------------------

    def update_message(self, message: Message) -> None:
        self.message = message
        if self.is_user:
            text = html.escape(message.text).replace("\n", "<br/>")
            self.body.setHtml(f"<p>{text}</p>" if text else "")
        else:
            self.body.setHtml(markdown.to_html(message.text))
        self.body.setVisible(bool(message.text))
        pending = message.status == MessageStatus.PENDING
        self.activity.setText(self._activity or "Thinking…")
        self.activity.setVisible(pending and not message.text)
        self._update_error(message)
        self._update_footer(message)
        self.fit(self._available_width)

    def set_activity(self, text: str) -> None:
        self._activity = text
        self.activity.setText(text)

    def _update_error(self, message: Message) -> None:
        retryable = message.status in MessageStatus.RETRYABLE
        self.error_box.setVisible(retryable)
        if message.status == MessageStatus.INTERRUPTED:
            sentence = "The engine stopped while writing this answer."
            detail = message.error_message
            self.error_label.setText(
                f"<b>{sentence}</b><br/>{html.escape(detail)}" if detail else sentence
            )
        elif retryable:
            self.error_label.setText(html.escape(message.error_message))
        set_style_property(self.error_box, "kind", message.status)
        self.error_box.setToolTip(message.error_code or "")

    def set_editing(self, editing: bool) -> None:
        """Outline the message being edited in the composer."""
        set_style_property(self, "editing", editing)

    def set_last(self, last: bool) -> None:
        self.is_last = last
        self._update_footer(self.message)

    def _update_footer(self, message: Message) -> None:
        ended = message.status != MessageStatus.PENDING
        if self.is_user:
            self.provenance.clear()  # left empty: it keeps "Edit" at the right
            for widget in (self.copy_button, self.regenerate_button):
                widget.setVisible(False)
            self.edit_button.setVisible(True)
            self.footer.setVisible(True)
            return
        self.edit_button.setVisible(False)
        parts = provenance_parts(message)
        self.provenance.setText(" · ".join(parts))
        copy = bool(message.text) and ended
        # A failed answer has its own Retry; an ended one can be asked for again.
        regenerate = self.is_last and ended and message.status not in MessageStatus.RETRYABLE
        self.copy_button.setVisible(copy)
        self.regenerate_button.setVisible(regenerate)
        # From the flags, not isVisible(): a card not on screen yet has no visible buttons.
        self.footer.setVisible(bool(parts) or copy or regenerate)

    def fit(self, available_width: int) -> None:
        """Size to the message list's width: answers use it all, user bubbles up to 75%."""
        self._available_width = available_width
        margins = self.contentsMargins() + self._layout.contentsMargins()
        inner = max(120, available_width - margins.left() - margins.right())
        if self.is_user:
            inner = max(120, int(available_width * 0.75) - margins.left() - margins.right())
            width = self.body.fit(inner, shrink=True) if self.message.text else 0
            if self.thumbnails is not None:
                width = max(width, min(inner, self.thumbnails.sizeHint().width()))
            width = max(width, self.footer.sizeHint().width())  # room for "Edit"
            self.setFixedWidth(width + margins.left() + margins.right())
        else:
            self.body.fit(inner, shrink=False)

    # -- slots ----------------------------------------------------------------------------

    @Slot(QUrl)
    def _on_body_anchor_clicked(self, url: QUrl) -> None:
        if url.scheme() == markdown.COPY_SCHEME:
            blocks = markdown.code_blocks(self.message.text)
            index = int(url.path() or 0)
            if 0 <= index < len(blocks):
                QGuiApplication.clipboard().setText(blocks[index].code)
        elif url.scheme() in ("http", "https"):
            QDesktopServices.openUrl(url)

    @Slot()
    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.message.text)
        self.copy_button.setText("Copied")
        QTimer.singleShot(1500, self.copy_button, lambda: self.copy_button.setText("Copy"))


def adapter_name(folder: str) -> str:
    """What an adapter is called: its run's folder name (a run keeps it in ``<run>/adapter``)."""
    path = Path(folder)
    return path.parent.name if path.name == "adapter" and path.parent.name else path.name


def provenance_parts(message: Message) -> list[str]:
    """'backend · model · quant · device · 12.3 tok/s · first token 85 ms · 599 of 638 prompt
    tokens reused', plus how the answer ended."""
    info = message.provenance
    parts = [str(info[k]) for k in ("backend", "model", "quant", "device") if info.get(k)]
    if info.get("adapter"):
        parts.insert(2, f"adapter {adapter_name(str(info['adapter']))}")
    if info.get("tokens_per_s"):
        parts.append(f"{float(info['tokens_per_s']):.1f} tok/s")
    first = info.get("time_to_first_token_s")
    if isinstance(first, (int, float)) and first > 0:
        parts.append(
            f"first token {first * 1000:.0f} ms" if first < 1 else f"first token {first:.1f} s"
        )
    if info.get("cached_tokens") and info.get("prompt_tokens"):
        parts.append(f"{info['cached_tokens']} of {info['prompt_tokens']} prompt tokens reused")
    if info.get("finish_reason") == "length":
        parts.append("stopped at the length limit")
    if message.status == MessageStatus.CANCELLED:
        parts.append("stopped")
    return parts
