"""The chat screen: messages (or a getting-started state), banners, and the composer; a drop target."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDropEvent, QImage, QTextCursor
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.storage import Attachment, Message
from desktop.views.composer import Composer, local_files
from desktop.views.message_list import MAX_COLUMN_WIDTH, MessageList
from desktop.views.style import set_style_property


class Banner(QFrame):
    """A one-line message across the chat with an optional action; info, warning or error."""

    action_clicked = Signal()

    def __init__(
        self, object_name: str, parent: QWidget | None = None, *, closable: bool = True
    ) -> None:
        super().__init__(parent)
        self.setObjectName(object_name)
        row = QHBoxLayout(self)
        row.setContentsMargins(14, 8, 10, 8)
        self.label = QLabel()
        self.label.setWordWrap(True)
        row.addWidget(self.label, 1)
        self.action = QPushButton()
        self.action.setObjectName("bannerAction")
        self.action.clicked.connect(self.action_clicked)
        row.addWidget(self.action)
        self.close_button = QToolButton()
        self.close_button.setObjectName("bannerClose")
        self.close_button.setText("✕")
        self.close_button.setAccessibleName("Dismiss")
        self.close_button.setToolTip("Dismiss this message")
        self.close_button.clicked.connect(self.hide)
        self.close_button.setVisible(closable)
        row.addWidget(self.close_button)
        self._hide_timer = QTimer(self, singleShot=True)
        self._hide_timer.timeout.connect(self.hide)
        self.hide()

    def show_message(
        self, text: str, level: str = "info", action: str = "", hide_after_ms: int = 0
    ) -> None:
        self.label.setText(text)
        self.action.setText(action)
        self.action.setVisible(bool(action))
        set_style_property(self, "level", level)
        self.show()
        if hide_after_ms:
            self._hide_timer.start(hide_after_ms)
        else:
            self._hide_timer.stop()


class EmptyState(QWidget):
    """What a new conversation shows: the three steps to a first answer, and without a model
    the way to get one."""

    models_requested = Signal()  # "Find a model to download…": the Models page

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("emptyState")
        layout = QVBoxLayout(self)
        layout.addStretch(2)
        icon = QLabel("◧")
        icon.setObjectName("emptyIcon")
        icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(icon)
        title = QLabel("Ask a vision model about your images")
        title.setObjectName("emptyTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(title)
        self.steps = QLabel()
        self.steps.setObjectName("emptySteps")
        self.steps.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.steps)
        self.models_button = QPushButton("Find a model to download…")
        self.models_button.setObjectName("primaryButton")
        self.models_button.setToolTip("Models that fit this computer, with their size and licence")
        self.models_button.clicked.connect(self.models_requested)
        row = QHBoxLayout()
        row.setContentsMargins(0, 12, 0, 12)
        row.addStretch(1)
        row.addWidget(self.models_button)
        row.addStretch(1)
        layout.addLayout(row)
        note = QLabel("Everything runs on this computer. Nothing is uploaded.")
        note.setObjectName("emptyNote")
        note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(note)
        layout.addStretch(3)
        self.set_has_model(False)

    def set_has_model(self, has_model: bool) -> None:
        first = (
            "✓ A model is selected (change it in the toolbar)"
            if has_model
            else "1. Pick a model in the toolbar, or choose “Add model folder…”"
        )
        self.models_button.setVisible(not has_model)
        self.steps.setText(
            f"{first}<br/>2. Drop an image or a PDF here, paste one, or press Ctrl+O<br/>"
            "3. Type a question and press Enter"
        )


def _centred(widget: QWidget) -> QHBoxLayout:
    """A row that keeps ``widget`` as wide as the message column, centred under it."""
    widget.setMaximumWidth(MAX_COLUMN_WIDTH)
    row = QHBoxLayout()
    row.addStretch(1)
    row.addWidget(widget, 100)
    row.addStretch(1)
    return row


class ChatView(QWidget):
    """Builds widgets and reports what the user did; a controller decides what happens."""

    send_requested = Signal(str)
    stop_requested = Signal()
    retry_requested = Signal(str)  # message id
    edit_requested = Signal(str)  # message id of a sent user message
    edit_cancelled = Signal()
    edit_last_requested = Signal()
    regenerate_requested = Signal(str)  # message id of the last answer
    files_dropped = Signal(list)  # list[Path]: dropped, pasted or chosen
    image_pasted = Signal(QImage)
    attach_requested = Signal()
    attachment_removed = Signal(int)
    engine_restart_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("chatView")
        self.setAcceptDrops(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.engine_banner = Banner("engineBanner")
        self.engine_banner.action_clicked.connect(self.engine_restart_requested)
        layout.addWidget(self.engine_banner)
        self.stack = QStackedWidget()
        self.empty_state = EmptyState()
        self.messages = MessageList()
        self.messages.retry_clicked.connect(self.retry_requested)
        self.messages.edit_clicked.connect(self.edit_requested)
        self.messages.regenerate_clicked.connect(self.regenerate_requested)
        self.stack.addWidget(self.empty_state)
        self.stack.addWidget(self.messages)
        layout.addWidget(self.stack, 1)
        bottom = QWidget()
        bottom.setObjectName("composerArea")
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(24, 6, 24, 16)
        bottom_layout.setSpacing(6)
        self.notice = Banner("notice")
        bottom_layout.addLayout(_centred(self.notice))
        self.editing_bar = Banner("editingBar", closable=False)  # its Cancel ends the edit
        self.editing_bar.action_clicked.connect(self.edit_cancelled)
        bottom_layout.addLayout(_centred(self.editing_bar))
        self._draft_before_edit: str | None = None
        self.composer = Composer()
        self.composer.send_requested.connect(self.send_requested)
        self.composer.stop_requested.connect(self.stop_requested)
        self.composer.attach_requested.connect(self.attach_requested)
        self.composer.attachment_removed.connect(self.attachment_removed)
        self.composer.edit.files_pasted.connect(self.files_dropped)
        self.composer.edit.image_pasted.connect(self.image_pasted)
        self.composer.edit.edit_last_requested.connect(self.edit_last_requested)
        bottom_layout.addLayout(_centred(self.composer))
        layout.addWidget(bottom)

    # -- filling --------------------------------------------------------------------------

    def show_conversation(self, messages: list[Message]) -> None:
        self.messages.set_messages(messages)
        self._update_stack()

    def add_message(self, message: Message) -> None:
        self.messages.add_message(message)
        self._update_stack()

    def update_message(self, message: Message) -> None:
        self.messages.update_message(message)

    def set_activity(self, message_id: str, text: str) -> None:
        self.messages.set_activity(message_id, text)

    def set_busy(self, busy: bool) -> None:
        self.composer.set_busy(busy)

    def set_draft_attachments(self, attachments: list[Attachment]) -> None:
        self.composer.set_attachments(attachments)

    def clear_composer(self) -> None:
        self.composer.clear_text()

    def begin_editing(self, message_id: str, text: str, later: int) -> None:
        """Put a sent message's text in the composer, keeping what was typed there before."""
        for card in self.messages.cards():
            card.set_editing(card.message.id == message_id)
        if self._draft_before_edit is None:
            self._draft_before_edit = self.composer.text()
        replaced = "it"
        if later == 1:
            replaced = "it and the answer after it"
        elif later > 1:
            replaced = f"it and the {later} messages after it"
        self.editing_bar.show_message(
            f"<b>Editing a message.</b> Send replaces {replaced}; Esc keeps the conversation "
            "as it is.",
            "info",
            action="Cancel",
        )
        edit = self.composer.edit
        edit.setPlainText(text)
        edit.moveCursor(QTextCursor.MoveOperation.End)
        edit.setFocus()

    def end_editing(self) -> None:
        """Back to the draft typed before the edit began (the edit was sent or cancelled)."""
        self.editing_bar.hide()
        for card in self.messages.cards():
            card.set_editing(False)
        if self._draft_before_edit is not None:
            self.composer.edit.setPlainText(self._draft_before_edit)
            self.composer.edit.moveCursor(QTextCursor.MoveOperation.End)
            self._draft_before_edit = None

    def show_notice(self, text: str) -> None:
        self.notice.show_message(text, "info", hide_after_ms=6000)

    def _update_stack(self) -> None:
        has_messages = bool(self.messages.cards())
        self.stack.setCurrentWidget(self.messages if has_messages else self.empty_state)

    # -- drag and drop --------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_files(event.mimeData()) or event.mimeData().hasImage():
            event.acceptProposedAction()
            self._set_drop_highlight(True)

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        self._set_drop_highlight(False)

    def dropEvent(self, event: QDropEvent) -> None:
        self._set_drop_highlight(False)
        files = local_files(event.mimeData())
        if files:
            self.files_dropped.emit(files)
        elif event.mimeData().hasImage():
            self.image_pasted.emit(QImage(event.mimeData().imageData()))
        else:
            return
        event.acceptProposedAction()

    def _set_drop_highlight(self, on: bool) -> None:
        set_style_property(self, "dropping", on)
