"""The main window, and the controller that wires engine client, state objects and views."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QImage, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QToolBar,
    QWidget,
)

from desktop import paths
from desktop.conversation_export import export_markdown
from desktop.engine_client import EngineClient, EngineExit, EnginePhase
from desktop.settings_store import CloudSettings, KeyStore
from desktop.state import ChatSession, EngineStatusModel, ModelCatalog, ModelChoice
from desktop.storage import MessageStatus, Storage
from desktop.views.chat import ChatView
from desktop.views.conversation_list import ConversationList
from desktop.views.extract import ExtractView
from desktop.views.finetune_page import FinetunePage
from desktop.views.message_card import adapter_name
from desktop.views.model_picker import ModelPicker
from desktop.views.models import ModelsView
from desktop.views.navigation import NavigationRail
from desktop.views.search import SearchView
from desktop.views.settings import SettingsView
from desktop.views.status_bar import EngineStatusBar
from engine import protocol as p

_IMAGE_FILTER = (
    "Images and PDFs (*.png *.jpg *.jpeg *.webp *.bmp *.gif *.tif *.tiff *.pdf);;All files (*)"
)


def _scrolling(widget: QWidget, max_width: int = 920) -> QScrollArea:
    """A tool page: its content in a readable column that scrolls when the window is short."""
    body = QWidget()
    body.setObjectName("pageBody")
    row = QHBoxLayout(body)
    row.setContentsMargins(24, 8, 24, 24)
    widget.setMaximumWidth(max_width)
    row.addStretch(1)
    row.addWidget(widget, 100)  # as wide as the window allows, up to max_width, centred
    row.addStretch(1)
    area = QScrollArea()
    area.setObjectName("pageScroll")
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setWidget(body)
    return area


def _padded(widget: QWidget) -> QWidget:
    """A tool page that fills the window (lists and tables), with the pages' margins."""
    body = QWidget()
    body.setObjectName("pageBody")
    layout = QHBoxLayout(body)
    layout.setContentsMargins(24, 16, 24, 16)
    layout.addWidget(widget)
    return body


class MainWindow(QMainWindow):
    """Does not start the engine: the caller does, after ``show()``, so the window is instant."""

    ask_before_quitting = True  # closing while long work runs asks first (work_in_progress)

    def __init__(
        self,
        storage: Storage,
        client: EngineClient,
        catalog: ModelCatalog | None = None,
        *,
        settings: QSettings | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.storage = storage
        self.client = client
        self.settings = settings or QSettings()
        self.catalog = catalog or ModelCatalog(self.settings, parent=self)
        self.session = ChatSession(storage, client, parent=self)
        self.engine_status = EngineStatusModel(client, parent=self)
        self.setWindowTitle("VisionDesk")
        self.resize(1180, 780)
        self._build()
        self._add_tool_pages()
        self._wire()
        self._restore()

    # -- building -------------------------------------------------------------------------

    def _build(self) -> None:
        self.model_picker = ModelPicker()
        toolbar = QToolBar("Model")
        toolbar.setObjectName("mainToolbar")
        toolbar.setMovable(False)
        toolbar.addWidget(self.model_picker)
        self.addToolBar(toolbar)
        self.conversation_list = ConversationList()
        self.chat_view = ChatView()
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.setHandleWidth(1)
        self.splitter.addWidget(self.conversation_list)
        self.splitter.addWidget(self.chat_view)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([250, 930])
        self.navigation = NavigationRail()
        self.pages = QStackedWidget()
        self.pages.setObjectName("pages")
        self._page_keys: list[str] = []
        central = QWidget()
        central.setObjectName("central")
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.navigation)
        row.addWidget(self.pages, 1)
        self.setCentralWidget(central)
        self.add_page("chat", "Chat", self.splitter, "Chat about images (Ctrl+1)")
        self.cloud_settings = CloudSettings(self.settings)
        # Frees the model's memory once it has been idle this long (Settings; off by default).
        self.idle_unload = QTimer(self, singleShot=True)
        self.idle_unload.timeout.connect(self._on_idle_unload_timeout)
        self._apply_engine_settings()
        self.settings_view = SettingsView(self.cloud_settings, KeyStore())
        self.session.routing = self.cloud_settings.routing_fields
        self.session.sampling = self.cloud_settings.sampling
        self.session.system_prompt = lambda: self.cloud_settings.system_prompt
        self.session.image_max_pixels = lambda: self.cloud_settings.image_max_pixels
        self.status_bar = EngineStatusBar()
        self.setStatusBar(self.status_bar)
        self.new_action = self._action("New chat", QKeySequence.StandardKey.New, self.new_chat)
        self.attach_action = self._action("Open…", QKeySequence.StandardKey.Open, self.open_files)
        self.find_action = self._action("Find", QKeySequence.StandardKey.Find, self.focus_find)
        self.stop_action = self._action(
            "Stop", QKeySequence(Qt.Key.Key_Escape), self.stop_or_cancel
        )
        self.regenerate_action = self._action(
            "Regenerate answer", QKeySequence("Ctrl+R"), self.regenerate_last_answer
        )
        self.quit_action = self._action("Quit", QKeySequence.StandardKey.Quit, self.close)
        self._side_jobs: dict[str, Callable[[p.Finished], None]] = {}

    def add_page(self, key: str, title: str, widget: QWidget, tooltip: str = "") -> None:
        """A page in the left rail; Ctrl+<n> switches to the n-th page."""
        self.pages.addWidget(widget)
        self._page_keys.append(key)
        self.navigation.add_page(key, title, tooltip)
        index = len(self._page_keys)
        if index <= 9:
            self._action(
                title, QKeySequence(f"Ctrl+{index}"), functools.partial(self.show_page, key)
            )
        if index == 1:
            self.navigation.set_current(key)

    def show_page(self, key: str) -> None:
        if key in self._page_keys:
            self.pages.setCurrentIndex(self._page_keys.index(key))
            self.navigation.set_current(key)

    def current_page(self) -> str:
        return self._page_keys[self.pages.currentIndex()]

    def run_side_job(self, command: p.Command, on_finished: Callable[[p.Finished], None]) -> None:
        """Send a job whose ``Finished`` goes to ``on_finished`` (views' engine requests)."""
        self._side_jobs[command.job_id] = on_finished  # type: ignore[attr-defined]
        self.client.send(command)

    def _action(
        self,
        text: str,
        shortcut: QKeySequence | QKeySequence.StandardKey,
        slot: Callable[[], object],
    ) -> QAction:
        action = QAction(text, self)
        action.setShortcut(shortcut)
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _wire(self) -> None:
        session, view, client = self.session, self.chat_view, self.client
        session.conversation_opened.connect(self._on_session_conversation_opened)
        session.conversations_changed.connect(self._on_session_conversations_changed)
        session.message_added.connect(view.add_message)
        session.message_updated.connect(view.update_message)
        session.activity_changed.connect(view.set_activity)
        session.draft_changed.connect(lambda: view.set_draft_attachments(session.draft_attachments))
        session.busy_changed.connect(view.set_busy)
        session.notice.connect(view.show_notice)
        session.cloud_consent_needed.connect(self._on_session_cloud_consent_needed)
        session.editing_changed.connect(self._on_session_editing_changed)
        session.undoable.connect(self._on_session_undoable)
        view.notice.action_clicked.connect(self._on_notice_undo_clicked)  # its only action
        view.send_requested.connect(self._on_view_send_requested)
        view.stop_requested.connect(self.stop_or_cancel)
        view.retry_requested.connect(self._on_view_retry_requested)
        view.edit_requested.connect(self.edit_message)
        view.edit_last_requested.connect(self._on_view_edit_last_requested)
        view.edit_cancelled.connect(session.cancel_edit)
        view.regenerate_requested.connect(session.regenerate)
        view.files_dropped.connect(session.attach_files)
        view.image_pasted.connect(self._on_view_image_pasted)
        view.attach_requested.connect(self.choose_attachments)
        view.attachment_removed.connect(session.remove_draft_attachment)
        view.engine_restart_requested.connect(client.restart)
        self.navigation.page_selected.connect(self.show_page)
        self.settings_view.connection_test_requested.connect(self._on_settings_test_requested)
        self.settings_view.settings_changed.connect(self._apply_engine_settings)
        self.settings_view.models_requested.connect(self._on_settings_models_requested)
        client.job_finished.connect(self._on_client_job_finished)
        self.status_bar.restart_requested.connect(client.restart)
        self.status_bar.unload_requested.connect(self.unload_model)
        self.conversation_list.conversation_selected.connect(session.open_conversation)
        self.conversation_list.new_requested.connect(session.new_conversation)
        self.conversation_list.delete_requested.connect(self._on_list_delete_requested)
        self.conversation_list.rename_requested.connect(self.rename_conversation)
        self.conversation_list.export_requested.connect(self._on_list_export_requested)
        self.conversation_list.filter_changed.connect(self._on_session_conversations_changed)
        self.model_picker.choice_changed.connect(self._on_picker_choice_changed)
        self.model_picker.add_folder_requested.connect(self.choose_model_folder)
        self.catalog.entries_changed.connect(self._on_catalog_entries_changed)
        self.engine_status.changed.connect(self._on_engine_status_changed)
        client.engine_died.connect(self._on_client_engine_died)
        client.engine_restarted.connect(self._on_client_engine_restarted)
        client.engine_failed.connect(self._on_client_engine_failed)

    def _add_tool_pages(self) -> None:
        self.extract_view = ExtractView(
            self.client,
            model_choice=self.model_picker.choice,
            routing=self.cloud_settings.routing_fields,
            adapter=lambda: self.session.adapter,
            settings=self.settings,
        )
        self.add_page("extract", "Extract", self.extract_view, "Documents and charts to data")
        self.search_view = SearchView(self.client, paths.data_dir())
        self.search_view.chat_about_image.connect(self._on_search_chat_about_image)
        self.extract_view.chat_about_page.connect(self.chat_about_page)
        self.extract_view.session.cloud_consent_needed.connect(
            self._on_extraction_cloud_consent_needed
        )
        self.search_view.extract_from_image.connect(self._on_search_extract_from_image)
        self.add_page("search", "Search", _padded(self.search_view), "Find images by meaning")
        self.finetune_page = FinetunePage(self.client, models=self._known_models)
        self.finetune_page.session.use_adapter_requested.connect(self._on_finetune_use_adapter)
        self.add_page("finetune", "Fine-tune", _scrolling(self.finetune_page), "Teach a model")
        self.models_view = ModelsView(self.client, settings=self.settings)
        self.models_view.use_model_requested.connect(self._on_models_use_requested)
        self.models_view.model_deleted.connect(self._on_models_model_deleted)
        self.chat_view.empty_state.models_requested.connect(lambda: self.show_page("models"))
        self.add_page(
            "models", "Models", _padded(self.models_view), "Find, download and check models"
        )
        self.add_page(
            "settings",
            "Settings",
            _scrolling(self.settings_view),
            "Cloud, keys, routing, local decoding",
        )

    def _restore(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.model_picker.set_entries(self.catalog.entries())
        self.set_model_choice(self.catalog.last_choice())
        conversations = self.session.conversations()
        if conversations:
            self.session.open_conversation(conversations[0].id)
        else:
            self.session.new_conversation()
        self._on_session_conversations_changed()
        self._on_engine_status_changed()

    # -- public API -----------------------------------------------------------------------

    def set_model_choice(self, choice: ModelChoice) -> None:
        self.model_picker.set_choice(choice)
        self._on_picker_choice_changed(choice)

    def send_message(self, text: str, attachments: list[Path] | None = None) -> bool:
        """What typing and pressing Enter does: attach, store, then ask the engine."""
        if attachments:
            self.session.attach_files(list(attachments))
        self.chat_view.composer.edit.setPlainText(text)
        return self._send(text)

    def edit_message(self, message_id: str) -> bool:
        """Take a sent message back into the composer; sending then replaces it and the rest."""
        text = self.session.begin_edit(message_id)
        if text is None:
            return False
        self.chat_view.begin_editing(message_id, text, self.session.later_messages(message_id))
        return True

    @Slot()
    def new_chat(self) -> None:
        self.show_page("chat")
        self.session.new_conversation()

    @Slot()
    def open_files(self) -> None:
        """Ctrl+O: documents to read on the Extract page, pictures to attach elsewhere."""
        if self.current_page() == "extract":
            self.extract_view.choose_files()
        else:
            self.show_page("chat")
            self.choose_attachments()

    @Slot()
    def focus_find(self) -> None:
        """Ctrl+F: the find box of the page on screen."""
        boxes = {
            "chat": self.conversation_list.filter,
            "search": self.search_view.query_edit,
            "models": self.models_view.find_edit,
        }
        box = boxes.get(self.current_page())
        if box is not None:
            if self.current_page() == "models":
                self.models_view.tabs.setCurrentIndex(0)
            box.setFocus()
            box.selectAll()

    @Slot()
    def unload_model(self) -> None:
        """Give the model's memory back (to a game, another app); the next question reloads it."""
        self.run_side_job(
            p.Unload(job_id=uuid.uuid4().hex), lambda _f: self.client.request_status()
        )

    @Slot()
    def regenerate_last_answer(self) -> bool:
        messages = self.session.messages
        if self.current_page() != "chat" or not messages:
            return False
        return self.session.regenerate(messages[-1].id)

    @Slot()
    def stop_or_cancel(self) -> None:
        """Esc on the Chat page: stop the answer being written, or else leave an edit unsent."""
        if self.current_page() != "chat":
            return
        if self.session.busy:
            self.session.stop()
            self.chat_view.composer.set_stopping()
        else:
            self.session.cancel_edit()

    def _send(self, text: str) -> bool:
        editing = self.session.editing is not None
        sent = self.session.send(text)
        if sent and not editing:  # a sent edit gives the composer back its earlier draft
            self.chat_view.clear_composer()
            if self.chat_view.notice.action.isVisible():  # an earlier edit can no longer be undone
                self.chat_view.notice.hide()
        return sent

    @Slot()
    def choose_attachments(self) -> None:
        last = str(self.settings.value("dialogs/attach_dir", str(Path.home())))
        files, _ = QFileDialog.getOpenFileNames(self, "Attach images", last, _IMAGE_FILTER)
        if files:
            self.settings.setValue("dialogs/attach_dir", str(Path(files[0]).parent))
            self.session.attach_files([Path(f) for f in files])

    @Slot()
    def choose_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder (with config.json)")
        if not folder:
            return
        try:
            entry = self.catalog.add_folder(Path(folder))
        except ValueError as error:
            self.chat_view.show_notice(str(error))
            return
        self.set_model_choice(dataclasses.replace(self.model_picker.choice(), model=entry.model))

    # -- slots ----------------------------------------------------------------------------

    @Slot(str)
    def _on_view_send_requested(self, text: str) -> None:
        self._send(text)

    @Slot()
    def _on_view_edit_last_requested(self) -> None:
        sent = [m for m in self.session.messages if m.role == "user"]
        if sent:
            self.edit_message(sent[-1].id)

    @Slot(str)
    def _on_session_undoable(self, sentence: str) -> None:
        self.chat_view.notice.show_message(sentence, "info", action="Undo", hide_after_ms=20_000)

    @Slot()
    def _on_notice_undo_clicked(self) -> None:
        self.chat_view.notice.hide()
        self.session.undo()

    @Slot(object)
    def _on_session_editing_changed(self, message: object) -> None:
        if message is None:
            self.chat_view.end_editing()

    @Slot(str)
    def _on_view_retry_requested(self, message_id: str) -> None:
        if self.session.retry(message_id) and self.client.is_ready():
            self.chat_view.engine_banner.hide()  # its advice ("press Retry") is taken

    @Slot(QImage)
    def _on_view_image_pasted(self, image: QImage) -> None:
        self.session.attach_image(image, paths.cache_dir())

    @Slot(str)
    def _on_session_conversation_opened(self, conversation_id: str) -> None:
        self.chat_view.show_conversation(self.session.messages)
        self.conversation_list.select(conversation_id)
        conversation = self.storage.conversation(conversation_id) if conversation_id else None
        self.setWindowTitle(f"{conversation.title} — VisionDesk" if conversation else "VisionDesk")
        self.chat_view.composer.edit.setFocus()

    @Slot()
    def _on_session_conversations_changed(self) -> None:
        self.conversation_list.set_conversations(
            self.session.conversations(self.conversation_list.filter_text()),
            self.session.conversation_id,
        )

    @Slot(str, str)
    def rename_conversation(self, conversation_id: str, title: str) -> None:
        if title:
            self.storage.rename_conversation(conversation_id, title)
        self._on_session_conversations_changed()  # shows the old title again if it was empty
        if title and conversation_id == self.session.conversation_id:
            self.setWindowTitle(f"{title} — VisionDesk")

    def export_conversation(self, conversation_id: str, target: Path) -> Path | None:
        """Write the conversation as Markdown with its pictures; None (and a notice) on failure."""
        try:
            return export_markdown(self.storage, conversation_id, target)
        except (OSError, ValueError) as error:
            self.chat_view.show_notice(f"Could not export the conversation: {error}")
            return None

    @Slot(str)
    def _on_list_export_requested(self, conversation_id: str) -> None:
        conversation = self.storage.conversation(conversation_id)
        if conversation is None:
            return
        folder = Path(str(self.settings.value("dialogs/export_dir", str(Path.home()))))
        name = "".join(c if c.isalnum() or c in " -_" else "_" for c in conversation.title)
        chosen, _ = QFileDialog.getSaveFileName(
            self, "Export conversation", str(folder / f"{name.strip() or 'conversation'}.md"),
            "Markdown (*.md)",
        )  # fmt: skip
        if not chosen:
            return
        self.settings.setValue("dialogs/export_dir", str(Path(chosen).parent))
        written = self.export_conversation(conversation_id, Path(chosen))
        if written is not None:
            self.chat_view.show_notice(f"Exported to {written}.")

    @Slot(str)
    def _on_list_delete_requested(self, conversation_id: str) -> None:
        answer = QMessageBox.question(self, "Delete conversation", "Delete this conversation?")
        if answer == QMessageBox.StandardButton.Yes:
            self.session.delete_conversation(conversation_id)

    @Slot(object)
    def _on_picker_choice_changed(self, choice: ModelChoice) -> None:
        self.session.set_model_choice(choice)
        self.catalog.save_choice(choice)
        self.chat_view.empty_state.set_has_model(bool(choice.model))

    @Slot()
    def _on_catalog_entries_changed(self) -> None:
        self.model_picker.set_entries(self.catalog.entries())

    @Slot()
    def _on_engine_status_changed(self) -> None:
        self.status_bar.show_status(self.engine_status)
        self._arm_idle_unload()
        if self.engine_status.devices:
            self.model_picker.set_cuda_available(self.engine_status.has_cuda())

    @Slot(str, str)
    def _on_settings_test_requested(self, provider: str, base_url: str) -> None:
        command = p.cloud.TestConnection(
            job_id=uuid.uuid4().hex, provider=provider, base_url=base_url or None
        )
        self.run_side_job(command, lambda f: self.settings_view.show_finished(provider, f))

    @Slot(str, str)
    def _on_settings_models_requested(self, provider: str, base_url: str) -> None:
        command = p.cloud.ListProviderModels(
            job_id=uuid.uuid4().hex, provider=provider, base_url=base_url or None
        )
        self.run_side_job(command, lambda f: self.settings_view.show_finished(provider, f))

    @Slot()
    def _apply_engine_settings(self) -> None:
        """Settings the engine reads at start-up reach its next start; the idle time at once."""
        self.client.set_environment(self.cloud_settings.engine_environment())
        self.idle_unload.setInterval(self.cloud_settings.idle_unload_minutes * 60_000)
        self.idle_unload.stop()
        self._arm_idle_unload()

    def _model_idle(self) -> bool:
        status = self.engine_status
        return (
            status.phase == EnginePhase.READY
            and status.engine_state == "idle"
            and status.loaded is not None
            and not self.session.busy
        )

    def _arm_idle_unload(self) -> None:
        """Count down while the model sits idle; anything it does stops the count."""
        if self.idle_unload.interval() > 0 and self._model_idle():
            if not self.idle_unload.isActive():
                self.idle_unload.start()
        else:
            self.idle_unload.stop()

    @Slot()
    def _on_idle_unload_timeout(self) -> None:
        if self._model_idle():
            self.unload_model()

    @Slot(str, str)
    def _on_session_cloud_consent_needed(self, message_id: str, sentence: str) -> None:
        """Policy "local, then ask": nothing leaves the machine without this yes."""
        answer = QMessageBox.question(
            self,
            "Send to a cloud service?",
            f"{sentence}\n\nSend this conversation, images included, for this answer only?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.session.send_to_cloud(message_id)

    @Slot(int, str)
    def _on_extraction_cloud_consent_needed(self, file_id: int, sentence: str) -> None:
        """Policy "local, then ask" on the Extract page: a document leaves the machine only
        with this yes, for itself or for the rest of its batch."""
        session = self.extract_view.session
        file = session.queue.file(file_id)
        name = file.name if file is not None else "this document"
        answer = QMessageBox.question(
            self,
            "Send to a cloud service?",
            f"{sentence}\n\nSend {name}, its pages as pictures, to be read there? "
            "“Yes to All” also sends the other documents now waiting in this batch that the local "
            "model cannot read.",
            QMessageBox.StandardButton.Yes
            | QMessageBox.StandardButton.YesToAll
            | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        yes = (QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.YesToAll)
        if answer in yes:
            session.send_to_cloud(file_id, whole_batch=answer == yes[1])
        else:
            session.decline_cloud(file_id)

    @Slot(str, int)
    def chat_about_page(self, path: str, page: int) -> None:
        """A document's page (a PDF's, rendered anew at chat size; an image as it is) becomes
        the attachment of a new conversation."""
        self.session.new_conversation()
        if Path(path).suffix.lower() == ".pdf":
            self.session.attach_pdf(Path(path), page)
        else:
            self.session.attach_files([Path(path)])
        self.show_page("chat")
        self.chat_view.composer.edit.setFocus()

    @Slot(str)
    def _on_search_chat_about_image(self, path: str) -> None:
        """A found image becomes an attachment of a new conversation."""
        self.session.new_conversation()
        self.session.attach_files([Path(path)])
        self.show_page("chat")
        self.chat_view.composer.edit.setFocus()

    @Slot(str)
    def _on_search_extract_from_image(self, path: str) -> None:
        self.extract_view.add_paths([Path(path)])
        self.show_page("extract")

    def _known_models(self) -> list[str]:
        return [entry.model for entry in self.catalog.entries()]

    @Slot(str, str)
    def _on_finetune_use_adapter(self, model: str, adapter: str) -> None:
        if Path(model).is_absolute() and not Path(model).is_dir():
            session = self.finetune_page.session  # what the wizard's last page shows
            session.message = (
                f"The base model {model} is gone (deleted or moved); the adapter needs it."
            )
            session.changed.emit()
            return
        self._on_models_use_requested(model)
        self.session.adapter = adapter
        self.chat_view.show_notice(
            f"Chat and Extract now use the adapter {adapter_name(adapter)} over {Path(model).name}."
        )

    @Slot(str)
    def _on_models_model_deleted(self, model: str) -> None:
        """A deleted model leaves the picker; chosen, it leaves the choice too (a question sent
        to it could only fail)."""
        self.catalog.forget(model)
        choice = self.model_picker.choice()
        if choice.model == model:
            self.set_model_choice(dataclasses.replace(choice, model=None))
            self.chat_view.show_notice(f"{model} was deleted: choose another model in the toolbar.")

    @Slot(str)
    def _on_models_use_requested(self, model: str) -> None:
        if Path(model).is_dir():
            try:
                self.catalog.add_folder(Path(model))
            except ValueError as error:
                self.chat_view.show_notice(str(error))
                return
        else:
            self.catalog.refresh()
        self.set_model_choice(dataclasses.replace(self.model_picker.choice(), model=model))
        self.show_page("chat")

    @Slot(object)
    def _on_client_job_finished(self, finished: p.Finished) -> None:
        handler = self._side_jobs.pop(finished.job_id, None)
        if handler is not None:
            handler(finished)

    @Slot(object)
    def _on_client_engine_died(self, outcome: EngineExit) -> None:
        self.chat_view.engine_banner.show_message(
            f"<b>Engine stopped — restarting…</b> {outcome.sentence()} Nothing you wrote was lost.",
            "warning",
        )

    @Slot(object)
    def _on_client_engine_restarted(self, _welcome: p.Welcome) -> None:
        interrupted = any(m.status == MessageStatus.INTERRUPTED for m in self.session.messages)
        hint = " Press Retry on the interrupted answer to ask again." if interrupted else ""
        self.chat_view.engine_banner.show_message(
            f"<b>Engine restarted.</b>{hint}", "info", hide_after_ms=8000
        )

    @Slot(str)
    def _on_client_engine_failed(self, sentence: str) -> None:
        self.chat_view.engine_banner.show_message(
            f"<b>The engine could not be started.</b> {sentence}", "error", action="Restart engine"
        )

    def closeEvent(self, event: QCloseEvent) -> None:
        running = self.work_in_progress()
        if running and self.isVisible() and self.ask_before_quitting:
            answer = QMessageBox.question(
                self,
                "Quit VisionDesk?",
                "Still at work:\n• "
                + "\n• ".join(running)
                + "\n\nQuit anyway? Nothing done so far "
                "is lost: training stops and saves, a download and an index pick up where they "
                "stopped, and the batch is offered again next time.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.client.stop()
        super().closeEvent(event)

    def work_in_progress(self) -> list[str]:
        """Long work that quitting would stop (an answer is kept as it stands, so not asked)."""
        running = []
        if self.finetune_page.session.state in ("training", "stopping"):
            running.append("a fine-tuning run")
        if downloads := self.models_view.jobs.downloading():
            running.append(f"downloading {', '.join(downloads)}")
        if self.search_view.is_indexing():
            running.append("indexing pictures for search")
        if self.extract_view.session.is_running():
            running.append("reading documents on the Extract page")
        return running
