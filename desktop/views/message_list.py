"""The scrolling column of message cards; it follows a streaming answer while at the bottom."""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QScrollArea, QVBoxLayout, QWidget

from desktop.storage import Message
from desktop.views.message_card import MessageCard

MAX_COLUMN_WIDTH = 860  # wide windows keep a readable line length
FIRST_CARDS = 12  # the newest messages of a conversation, built at once: more than a window shows
BATCH_CARDS = 8  # older messages built per idle turn of the event loop (~30 ms on a slow machine)


class MessageList(QScrollArea):
    """Cards in the conversation's order. A long conversation shows its newest messages at once
    and builds the older ones above them a few at a time, so opening it does not freeze the
    window; the view stays at the bottom meanwhile (or where the reader scrolled to)."""

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
        column = self._column = QWidget()
        column.setMaximumWidth(MAX_COLUMN_WIDTH)
        self._column_layout = QVBoxLayout(column)
        self._column_layout.setContentsMargins(0, 0, 0, 0)
        self._column_layout.setSpacing(14)
        self._column_layout.addStretch(1)
        outer.addWidget(column, 100)
        outer.addStretch(1)
        self.setWidget(content)
        self._cards: dict[str, MessageCard] = {}  # in the conversation's order
        self._older: list[Message] = []  # not built yet, oldest first; they go above the cards
        self._builder = QTimer(self)  # builds the older cards whenever the window is idle
        self._builder.setInterval(0)
        self._builder.timeout.connect(self._on_builder_timeout)
        self._follow = True
        self._bottom_distance = 0  # where the reader is, counted from the bottom
        self._keep_bottom_distance = False  # cards were put above: keep the reader's place
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)
        self.verticalScrollBar().valueChanged.connect(self._on_value_changed)

    def cards(self) -> list[MessageCard]:
        """The cards built so far, oldest first."""
        return list(self._cards.values())

    def card(self, message_id: str) -> MessageCard | None:
        return self._cards.get(message_id)

    def is_loading(self) -> bool:
        """Whether older messages of the conversation are still to be shown."""
        return bool(self._older)

    def clear(self) -> None:
        self._builder.stop()
        self._older = []
        # Reparenting a card restyles every widget in it; hidden cards left in place for the
        # deferred delete cost a fraction of that, and the column hidden meanwhile is not laid
        # out again for each one.
        self._column.hide()
        for card in self._cards.values():
            self._column_layout.removeWidget(card)
            card.hide()
            card.deleteLater()
        self._column.show()
        self._cards.clear()
        self._follow = True

    def set_messages(self, messages: list[Message]) -> None:
        self.clear()
        split = max(0, len(messages) - FIRST_CARDS)
        self._older = list(messages[:split])  # a copy: the caller's list keeps changing
        for message in messages[split:]:
            self.add_message(message)
        if self._older:
            self._builder.start()

    def add_message(self, message: Message) -> MessageCard:
        """Put a message at the bottom, as the conversation's last."""
        card = self._make_card(message)
        previous = next(reversed(self._cards.values()), None)
        if previous is not None:
            previous.set_last(False)
        card.set_last(True)
        self._column_layout.insertWidget(self._column_layout.count() - 1, card, 0, card.alignment)
        card.show()  # now, not on the next turn of the event loop, so it is laid out with the rest
        self._cards[message.id] = card
        self._follow = True
        return card

    def update_message(self, message: Message) -> None:
        card = self._cards.get(message.id)
        if card is not None:
            card.update_message(message)
            return
        for index, older in enumerate(self._older):
            if older.id == message.id:  # not on screen yet: it is built as it is now
                self._older[index] = message

    def set_activity(self, message_id: str, text: str) -> None:
        card = self._cards.get(message_id)
        if card is not None:
            card.set_activity(text)

    def scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _make_card(self, message: Message) -> MessageCard:
        card = MessageCard(message, width=self._column_width())
        card.retry_clicked.connect(self.retry_clicked)
        card.edit_clicked.connect(self.edit_clicked)
        card.regenerate_clicked.connect(self.regenerate_clicked)
        return card

    def _column_width(self) -> int:
        margins = self._outer_layout.contentsMargins()
        return min(MAX_COLUMN_WIDTH, self.viewport().width() - margins.left() - margins.right())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        width = self._column_width()
        for card in self._cards.values():
            card.fit(width)

    def _on_builder_timeout(self) -> None:
        batch, self._older = self._older[-BATCH_CARDS:], self._older[:-BATCH_CARDS]
        built: dict[str, MessageCard] = {}
        for index, message in enumerate(batch):
            card = built[message.id] = self._make_card(message)
            self._column_layout.insertWidget(index, card, 0, card.alignment)
            card.show()
        self._cards = {**built, **self._cards}
        # The scroll area resizes the column now rather than on a later turn of the event loop,
        # so no frame shows the cards squeezed into the column's old height, and the scroll
        # bar's new range is known while the reader's place can still be kept.
        self._keep_bottom_distance = True
        QCoreApplication.sendEvent(self, QEvent(QEvent.Type.LayoutRequest))
        self._keep_bottom_distance = False
        if not self._older:
            self._builder.stop()

    def _on_range_changed(self, _minimum: int, maximum: int) -> None:
        bar = self.verticalScrollBar()
        if self._follow:
            bar.setValue(maximum)  # now, so no frame shows the view off the bottom
            # After the layout settles, or the last lines of a growing answer stay hidden.
            QTimer.singleShot(0, self, self._on_layout_settled)
        elif self._keep_bottom_distance:
            bar.setValue(maximum - self._bottom_distance)

    def _on_layout_settled(self) -> None:
        if self._follow:  # unless the reader scrolled away meanwhile
            self.scroll_to_bottom()

    def _on_value_changed(self, value: int) -> None:
        maximum = self.verticalScrollBar().maximum()
        self._bottom_distance = maximum - value
        self._follow = value >= maximum - 8
