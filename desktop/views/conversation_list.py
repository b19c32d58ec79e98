"""The sidebar: a New chat button and the saved conversations, most recent first."""

from __future__ import annotations

import time

from PySide6.QtCore import QPoint, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QLineEdit,
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


class _List(QListWidget):
    """Delete asks to delete the current conversation; F2 renames it in place."""

    delete_pressed = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Delete and self.currentItem() is not None:
            self.delete_pressed.emit()
            return
        if event.key() == Qt.Key.Key_F2 and self.currentItem() is not None:
            self.editItem(self.currentItem())
            return
        super().keyPressEvent(event)


class ConversationList(QWidget):
    conversation_selected = Signal(str)
    new_requested = Signal()
    delete_requested = Signal(str)
    rename_requested = Signal(str, str)  # id, new title
    export_requested = Signal(str)
    filter_changed = Signal(str)

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
        self.filter = QLineEdit()
        self.filter.setObjectName("conversationFilter")
        self.filter.setPlaceholderText("Search conversations")
        self.filter.setClearButtonEnabled(True)
        self.filter.setToolTip("Titles and messages that contain these words")
        self.filter.textChanged.connect(self.filter_changed)
        layout.addWidget(self.filter)
        self.list = _List()
        self.list.setObjectName("conversationList")
        self.list.delete_pressed.connect(self._on_list_delete_pressed)
        self.list.itemChanged.connect(self._on_list_item_changed)
        self.empty = QLabel("No conversation has these words.")
        self.empty.setObjectName("sidebarEmpty")
        self.empty.setWordWrap(True)
        self.empty.hide()
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        # Renaming is asked for (F2, the menu): a double click only opens the conversation.
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._on_list_context_menu_requested)
        self.list.currentItemChanged.connect(self._on_list_current_item_changed)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.empty)
        self._updating = False

    def filter_text(self) -> str:
        return self.filter.text()

    def set_conversations(self, conversations: list[Conversation], current_id: str) -> None:
        self._updating = True
        try:
            self.list.clear()
            for conversation in conversations:
                item = QListWidgetItem(conversation.title)
                item.setData(_ID_ROLE, conversation.id)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                item.setToolTip(f"{conversation.title}\n{when(conversation.updated_at)}")
                self.list.addItem(item)
                if conversation.id == current_id:
                    self.list.setCurrentItem(item)
            self.empty.setVisible(not conversations and bool(self.filter_text().strip()))
        finally:
            self._updating = False

    def rename(self, conversation_id: str) -> None:
        """Edit the title in place (Enter keeps it, Esc leaves it as it was)."""
        for row in range(self.list.count()):
            if self.list.item(row).data(_ID_ROLE) == conversation_id:
                self.list.editItem(self.list.item(row))

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
        conversation_id = item.data(_ID_ROLE)
        menu = QMenu(self)
        rename = menu.addAction("Rename…")
        rename.setShortcut("F2")
        export = menu.addAction("Export as Markdown…")
        menu.addSeparator()
        delete = menu.addAction("Delete conversation")
        delete.setShortcut("Del")
        chosen = menu.exec(self.list.viewport().mapToGlobal(position))
        if chosen is rename:
            self.rename(conversation_id)
        elif chosen is export:
            self.export_requested.emit(conversation_id)
        elif chosen is delete:
            self.delete_requested.emit(conversation_id)

    @Slot()
    def _on_list_delete_pressed(self) -> None:
        self.delete_requested.emit(self.list.currentItem().data(_ID_ROLE))

    @Slot(QListWidgetItem)
    def _on_list_item_changed(self, item: QListWidgetItem) -> None:
        if self._updating:
            return
        # An empty title is no name: whoever renames keeps the old one. Told on the next turn:
        # the list may be filled anew, which must wait until the view has closed its editor.
        conversation_id, title = item.data(_ID_ROLE), " ".join(item.text().split())
        QTimer.singleShot(0, self, lambda: self.rename_requested.emit(conversation_id, title))
