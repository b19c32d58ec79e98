"""The scrolling column of message cards; it follows a streaming answer while at the bottom."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QScrollArea, QVBoxLayout, QWidget

from desktop.storage import Message
from desktop.views.message_card import MessageCard

MAX_COLUMN_WIDTH = 860  # wide windows keep a readable line length


class MessageList(QScrollArea):
    retry_clicked = Signal(str)  # message id
    edit_clicked = Signal(str)
    regenerate_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageList")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content = QWidget()
        content.setObjectName("messageColumn")
        outer = self._outer_layout = QHBoxLayout(content)
        outer.setContentsMargins(24, 20, 24, 20)
        outer.addStretch(1)
        column = QWidget()
        column.setMaximumWidth(MAX_COLUMN_WIDTH)
        self._column_layout = QVBoxLayout(column)
        self._column_layout.setContentsMargins(0, 0, 0, 0)
        self._column_layout.setSpacing(14)
        self._column_layout.addStretch(1)
        outer.addWidget(column, 100)
        outer.addStretch(1)
        self.setWidget(content)
        self._cards: dict[str, MessageCard] = {}
        self._follow = True
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)
        self.verticalScrollBar().valueChanged.connect(self._on_value_changed)

    def cards(self) -> list[MessageCard]:
        return list(self._cards.values())

    def card(self, message_id: str) -> MessageCard | None:
        return self._cards.get(message_id)

    def clear(self) -> None:
        for card in self._cards.values():
            card.setParent(None)
            card.deleteLater()
        self._cards.clear()
        self._follow = True

    def set_messages(self, messages: list[Message]) -> None:
        self.clear()
        for message in messages:
            self.add_message(message)

    def add_message(self, message: Message) -> MessageCard:
        card = MessageCard(message)
        card.retry_clicked.connect(self.retry_clicked)
        card.edit_clicked.connect(self.edit_clicked)
        card.regenerate_clicked.connect(self.regenerate_clicked)
        previous = next(reversed(self._cards.values()), None)  # cards keep their order
        if previous is not None:
            previous.set_last(False)
        card.set_last(True)
        card.fit(self._column_width())
        align = Qt.AlignmentFlag.AlignRight if card.is_user else Qt.AlignmentFlag(0)
        self._column_layout.insertWidget(self._column_layout.count() - 1, card, 0, align)
        self._cards[message.id] = card
        self._follow = True
        return card

    def update_message(self, message: Message) -> None:
        card = self._cards.get(message.id)
        if card is not None:
            card.update_message(message)

    def set_activity(self, message_id: str, text: str) -> None:
        card = self._cards.get(message_id)
        if card is not None:
            card.set_activity(text)

    def scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _column_width(self) -> int:
        margins = self._outer_layout.contentsMargins()
        return min(MAX_COLUMN_WIDTH, self.viewport().width() - margins.left() - margins.right())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        width = self._column_width()
        for card in self._cards.values():
            card.fit(width)

    def _on_range_changed(self, _minimum: int, maximum: int) -> None:
        if self._follow:
            # After the layout settles, or the last lines of a growing answer stay hidden.
            QTimer.singleShot(0, self, self.scroll_to_bottom)

    def _on_value_changed(self, value: int) -> None:
        self._follow = value >= self.verticalScrollBar().maximum() - 8
