"""The sidebar: a New chat button and the saved conversations, most recent first."""

from __future__ import annotations

import time

from PySide6.QtCore import QPoint, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.storage import Conversation

_ID_ROLE = Qt.ItemDataRole.UserRole


def when(timestamp: float, now: float | None = None) -> str:
    """'Today 14:05', 'Yesterday', or a date: enough to tell conversations apart."""
    now = now or time.time()
    day, today = time.localtime(timestamp), time.localtime(now)
    if day[:3] == today[:3]:
        return time.strftime("Today %H:%M", day)
    if now - timestamp < 2 * 86400 and today.tm_yday - day.tm_yday == 1:
        return "Yesterday"
    return time.strftime("%d %b %Y", day)


class ConversationList(QWidget):
    conversation_selected = Signal(str)
    new_requested = Signal()
    delete_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sidebar")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 14, 12, 12)
        layout.setSpacing(10)
        brand = QLabel("VisionDesk")
        brand.setObjectName("brand")
        layout.addWidget(brand)
        self.new_button = QPushButton("+  New chat")
        self.new_button.setObjectName("newChatButton")
        self.new_button.setToolTip("New conversation (Ctrl+N)")
        self.new_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.new_button.clicked.connect(self.new_requested)
        layout.addWidget(self.new_button)
        heading = QLabel("Conversations")
        heading.setObjectName("sidebarHeading")
        layout.addWidget(heading)
        self.list = QListWidget()
        self.list.setObjectName("conversationList")
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._on_list_context_menu_requested)
        self.list.currentItemChanged.connect(self._on_list_current_item_changed)
        layout.addWidget(self.list, 1)
        self._updating = False

    def set_conversations(self, conversations: list[Conversation], current_id: str) -> None:
        self._updating = True
        try:
            self.list.clear()
            for conversation in conversations:
                item = QListWidgetItem(conversation.title)
                item.setData(_ID_ROLE, conversation.id)
                item.setToolTip(f"{conversation.title}\n{when(conversation.updated_at)}")
                self.list.addItem(item)
                if conversation.id == current_id:
                    self.list.setCurrentItem(item)
        finally:
            self._updating = False

    def select(self, conversation_id: str) -> None:
        self._updating = True
        try:
            self.list.setCurrentRow(-1)
            for row in range(self.list.count()):
                if self.list.item(row).data(_ID_ROLE) == conversation_id:
                    self.list.setCurrentRow(row)
        finally:
            self._updating = False

    @Slot(QListWidgetItem, QListWidgetItem)
    def _on_list_current_item_changed(
        self, item: QListWidgetItem | None, _previous: object
    ) -> None:
        if item is not None and not self._updating:
            self.conversation_selected.emit(item.data(_ID_ROLE))

    @Slot(QPoint)
    def _on_list_context_menu_requested(self, position: QPoint) -> None:
        item = self.list.itemAt(position)
        if item is None:
            return
        menu = QMenu(self)
        delete = menu.addAction("Delete conversation")
        if menu.exec(self.list.viewport().mapToGlobal(position)) is delete:
            self.delete_requested.emit(item.data(_ID_ROLE))
