"""The Extract page: drop documents, watch the queue, check each page beside its editable
result (problems highlighted, provenance shown) and export the batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, Signal, Slot
from PySide6.QtGui import (
    QAction,
    QDragEnterEvent,
    QDragLeaveEvent,
    QDropEvent,
    QKeySequence,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop import paths
from desktop.extraction_queue import BatchStatus, ExtractionQueue, FileStatus, default_path
from desktop.state.extraction import ExtractionSession
from desktop.views.chat import Banner
from desktop.views.composer import local_files
from desktop.views.extract_panels import (
    DropZone,
    ElidedLabel,
    PagePanel,
    QueuePanel,
    file_status_text,
)
from desktop.views.json_editor import (
    JsonTreeEditor,
    RecordsTable,
    changed_pointers,
    get_at,
    parts_of,
)
from desktop.views.schema_builder import SchemaBuilder
from desktop.views.style import set_style_property

EXPORTS = (("json", "JSON"), ("jsonl", "JSON Lines"), ("csv", "CSV"), ("md", "Markdown"))
LOAD_SCHEMA = "__load__"
BUILD_SCHEMA = "__build__"

STYLE = """
QWidget#extractView { background: #f7f8fa; }
QFrame#extractColumn { background: #ffffff; border: 1px solid #e5e7eb; border-radius: 10px; }
QFrame#dropZone { border: 2px dashed #c7d2fe; border-radius: 10px; background: #f5f7ff; }
QWidget#extractView[dropping="true"] QFrame#dropZone { border-color: #2563eb; background: #e0e8ff; }
QLabel#dropIcon { font-size: 22pt; color: #6366f1; }
QLabel#dropTitle { font-weight: 600; color: #1f2937; }
QLabel#dropNote, QLabel#fieldCaption { color: #6b7280; font-size: 8.5pt; }
QLabel#panelHeading { font-weight: 600; color: #111827; font-size: 10.5pt; }
QLabel#statusBadge { border-radius: 9px; padding: 2px 10px; font-weight: 600; color: #ffffff;
    background: #6b7280; }
QLabel#statusBadge[level="ok"] { background: #15803d; }
QLabel#statusBadge[level="warning"] { background: #b45309; }
QLabel#statusBadge[level="error"] { background: #b91c1c; }
QLabel#provenance { color: #6b7280; font-size: 8.5pt; }
QLabel#pageImage { background: #eef0f4; color: #6b7280; }
QListWidget#issueList { border: 1px solid #f3d1d1; border-radius: 6px; background: #fffafa; }
QListWidget#thumbnailStrip { background: #f3f4f6; border: none; border-radius: 6px; }
QPushButton { background: #ffffff; border: 1px solid #d1d5db; border-radius: 6px;
    padding: 4px 12px; }
QPushButton:hover { border-color: #9ca3af; }
QPushButton:disabled { color: #9ca3af; }
QPushButton#segment:checked { background: #e0e7ff; border-color: #6366f1; color: #3730a3; }
QPushButton#exportButton { font-weight: 600; }
QTreeWidget, QTableWidget { border: 1px solid #e5e7eb; border-radius: 6px; }
"""


def page_issues(
    result: dict[str, Any], edited: Any, has_edit: bool, schema: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The issues to show for a page and, if the user edited it, what each edit replaced.

    The engine's issues stay, except on fields the user changed (those were the user's answer to
    them) and schema issues, which are checked again on the edited data here.
    """
    issues = [dict(issue) for issue in result.get("issues") or []]
    if not has_edit:
        return issues, {}
    original = result.get("data")
    changed = changed_pointers(original, edited)
    kept = [
        issue
        for issue in issues
        if issue.get("check") != "schema"
        and not any(_within(str(issue.get("path") or ""), path) for path in changed if path)
    ]
    if schema:
        kept += [
            {"path": path, "check": "schema", "message": message, "severity": "error"}
            for path, message in _validation_errors(edited, schema)
        ]
    replaced = {}
    for path in changed:
        try:
            replaced[path] = get_at(original, path) if path else original
        except (KeyError, IndexError, TypeError, ValueError):
            replaced[path] = None
    return kept, replaced


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _validation_errors(data: Any, schema: dict[str, Any]) -> list[tuple[str, str]]:
    from jsonschema import validators

    validator = validators.validator_for(schema)(schema)
    found = []
    for error in validator.iter_errors(data):
        parts = [str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path]
        found.append(("".join("/" + p for p in parts), error.message))
    return found


class ExtractView(QWidget):
    """Builds the widgets and forwards what the user does to an ``ExtractionSession``."""

    chat_about_page = Signal(str, int)  # a file and its page number, for a new chat

    def __init__(
        self,
        client: Any,
        *,
        model_choice: Any = lambda: None,
        routing: Any = None,
        adapter: Any = lambda: None,
        queue: ExtractionQueue | None = None,
        settings: QSettings | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("extractView")
        self.setAcceptDrops(True)
        self.setStyleSheet(STYLE)
        self.settings = settings
        self.queue = queue or ExtractionQueue(default_path(paths.data_dir()))
        cache = paths.cache_dir()
        self.session = ExtractionSession(
            client,
            self.queue,
            preview_dir=cache / "extract-pages",
            replot_dir=paths.data_dir() / "replots",
            model_choice=model_choice,
            routing=routing,
            adapter=adapter,
            parent=self,
        )
        self.file_id: int | None = None
        self._shown_result = ""  # what the result editors show, to leave them be when it holds
        self.page = 0
        self._build()
        self._restore_choices()
        self._wire()
        self._on_session_schemas_changed()
        self._on_session_queue_changed()
        self._on_session_batch_changed()

    # -- building -------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 12)
        layout.setSpacing(8)
        self.banner = Banner("notice")
        layout.addWidget(self.banner)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("extractSplitter")
        self.splitter.setHandleWidth(8)
        self.splitter.addWidget(self._column(self._build_inputs()))
        self.page_panel = PagePanel()
        self.splitter.addWidget(self._column(self.page_panel))
        self.splitter.addWidget(self._column(self._build_result()))
        self.splitter.setStretchFactor(1, 5)
        self.splitter.setStretchFactor(2, 5)
        self.splitter.setSizes([300, 430, 460])
        layout.addWidget(self.splitter, 1)

    def _column(self, content: QWidget) -> QFrame:
        frame = QFrame()
        frame.setObjectName("extractColumn")
        box = QVBoxLayout(frame)
        box.setContentsMargins(12, 12, 12, 12)
        box.addWidget(content)
        return frame

    def _build_inputs(self) -> QWidget:
        panel = QWidget()
        panel.setMinimumWidth(220)
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        self.drop_zone = DropZone()
        layout.addWidget(self.drop_zone)
        caption = QLabel("Read into")
        caption.setObjectName("fieldCaption")
        layout.addWidget(caption)
        self.schema_combo = QComboBox()
        self.schema_combo.setObjectName("schemaCombo")
        layout.addWidget(self.schema_combo)
        self.two_pass_box = QCheckBox("Transcribe first (two passes)")
        self.two_pass_box.setChecked(True)
        self.two_pass_box.setToolTip(
            "Read the page freely first, then fill the schema: slower, more accurate"
        )
        layout.addWidget(self.two_pass_box)
        self.keep_local_box = QCheckBox("Never send new documents")
        self.keep_local_box.setToolTip(
            "Mark documents added from now on “never send”: whatever the routing policy, "
            "they stay on this computer"
        )
        layout.addWidget(self.keep_local_box)
        self.batch_combo = QComboBox()
        self.batch_combo.setObjectName("batchCombo")
        self.batch_combo.setToolTip("Earlier batches, stored with their results")
        layout.addWidget(self.batch_combo)
        self.queue_panel = QueuePanel()
        layout.addWidget(self.queue_panel, 1)
        return panel

    def _build_result(self) -> QWidget:
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        heading = QHBoxLayout()
        self.result_title = ElidedLabel("Result")
        self.result_title.setObjectName("panelHeading")
        heading.addWidget(self.result_title, 1)
        self.status_badge = QLabel("")
        self.status_badge.setObjectName("statusBadge")
        self.status_badge.hide()
        heading.addWidget(self.status_badge)
        self.read_again_button = QPushButton("Read again")
        self.read_again_button.setToolTip("Read this file again with the current model")
        self.read_again_button.clicked.connect(self._on_read_again_clicked)
        self.read_again_button.hide()
        heading.addWidget(self.read_again_button)
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip(
            "Back to the model's answer for this page (Ctrl+Z brings your edits back)"
        )
        self.revert_button.clicked.connect(self._on_revert_clicked)
        self.revert_button.hide()
        heading.addWidget(self.revert_button)
        layout.addLayout(heading)
        self.result_tabs = QTabWidget()
        self.result_tabs.setObjectName("resultTabs")
        self.editor = JsonTreeEditor()
        self.table = RecordsTable()
        self.result_tabs.addTab(self.editor, "Fields")
        self.result_tabs.addTab(self.table, "Table")
        layout.addWidget(self.result_tabs, 1)
        self.issue_list = QListWidget()
        self.issue_list.setObjectName("issueList")
        self.issue_list.setMaximumHeight(110)
        self.issue_list.setWordWrap(True)
        self.issue_list.hide()
        layout.addWidget(self.issue_list)
        self.provenance = QLabel("")
        self.provenance.setObjectName("provenance")
        self.provenance.setWordWrap(True)
        self.provenance.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.provenance)
        self.never_send_box = QCheckBox("Never send to a cloud service")
        self.never_send_box.setToolTip(
            "This document stays on this computer, whatever the routing policy says"
        )
        self.never_send_box.setObjectName("neverSendBox")
        self.never_send_box.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.never_send_box)
        row.addStretch(1)
        # One button with the formats in its menu: the column stays narrow enough for a
        # 1024-px screen.
        self.export_button = QToolButton()
        self.export_button.setObjectName("exportButton")
        self.export_button.setText("Export batch")
        self.export_button.setToolTip("Write the batch's results to a file")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        self.export_actions: dict[str, QAction] = {}
        for fmt, label in EXPORTS:
            action = menu.addAction(f"{label}…")
            action.triggered.connect(lambda _checked=False, f=fmt: self.choose_export(f))
            self.export_actions[fmt] = action
        self.export_button.setMenu(menu)
        row.addWidget(self.export_button)
        layout.addLayout(row)
        return panel

    def _wire(self) -> None:
        session = self.session
        session.queue_changed.connect(self._on_session_queue_changed)
        session.file_progress.connect(self._on_session_file_progress)
        session.page_stored.connect(self._on_session_page_stored)
        session.document_changed.connect(self._on_session_document_changed)
        session.previews_changed.connect(self._on_session_previews_changed)
        session.schemas_changed.connect(self._on_session_schemas_changed)
        session.schema_checked.connect(self._on_session_schema_checked)
        session.batch_changed.connect(self._on_session_batch_changed)
        session.notice.connect(self._on_session_notice)
        session.export_finished.connect(self._on_session_export_finished)
        self.drop_zone.add_files_clicked.connect(self.choose_files)
        self.drop_zone.add_folder_clicked.connect(self.choose_folder)
        self.schema_combo.activated.connect(self._on_schema_activated)
        self.two_pass_box.toggled.connect(self._on_two_pass_toggled)
        self.keep_local_box.toggled.connect(lambda on: setattr(session, "never_send_new", on))
        self.batch_combo.activated.connect(self._on_batch_activated)
        self.queue_panel.file_selected.connect(self.select_file)
        self.queue_panel.pause_clicked.connect(session.pause)
        self.queue_panel.resume_clicked.connect(session.resume)
        self.queue_panel.cancel_clicked.connect(session.cancel)
        self.queue_panel.retry_requested.connect(session.retry_file)
        self.page_panel.page_selected.connect(self.select_page)
        self.page_panel.ask_requested.connect(self._on_page_ask_requested)
        self.editor.data_edited.connect(self._on_editor_data_edited)
        self.table.data_edited.connect(self._on_editor_data_edited)
        self.never_send_box.toggled.connect(self._on_never_send_toggled)
        self.banner.action_clicked.connect(self._on_banner_action_clicked)
        # Ctrl+Z on this page takes back a result edit (a field being typed in keeps its own).
        undo = QAction("Undo edit", self)
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        undo.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        undo.triggered.connect(self.undo_edit)
        self.addAction(undo)

    def _restore_choices(self) -> None:
        """The schema and passes chosen last time (built-in schemas only: files may move)."""
        if self.settings is None:
            return
        schema = str(self.settings.value("extract/schema", "invoice"))
        if schema in self.session.schemas:
            self.session.choose_schema(schema)
        two_pass = self.settings.value("extract/two_pass", True)
        self.two_pass_box.setChecked(str(two_pass).lower() not in ("false", "0"))
        self.session.two_pass = self.two_pass_box.isChecked()

    def _remember(self, key: str, value: object) -> None:
        if self.settings is not None:
            self.settings.setValue(f"extract/{key}", value)

    # -- public API -----------------------------------------------------------------------

    def add_paths(self, paths_: list[Path]) -> None:
        """Files or folders to read (what a drop does)."""
        if self.banner.property("level") == "error":
            self.banner.hide()  # an error stays until read, and the user has moved on
        added = self.session.add_paths([Path(p) for p in paths_])
        if added and (self.file_id is None or self.file_id not in {f.id for f in added}):
            self.queue_panel.select(added[0].id)

    def select_file(self, file_id: int) -> None:
        self.file_id = file_id
        file = self.queue.file(file_id)
        if file is None:
            return
        if file_id not in self.session.previews and file_id not in self.session.preview_errors:
            self.session.request_previews(file_id)
        stored = self.queue.pages(file_id)
        self.page = stored[0].page if stored else 1
        self._show_document()
        self.select_page(self.page)

    def select_page(self, number: int) -> None:
        self.page = number
        if self.file_id is not None:
            self.session.request_page_preview(self.file_id, number)
        self._show_result()

    def export_to(self, fmt: str, path: Path) -> bool:
        """Write the batch's results (what the Export batch menu does after the file dialog)."""
        return self.session.export(fmt, Path(path))

    @Slot()
    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self,
            "Documents to read",
            str(Path.home()),
            "Documents (*.pdf *.png *.jpg *.jpeg *.webp *.tif *.tiff *.gif *.bmp);;All files (*)",
        )
        if files:
            self.add_paths([Path(f) for f in files])

    @Slot()
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A folder of documents to read")
        if folder:
            self.add_paths([Path(folder)])

    def choose_export(self, fmt: str) -> None:
        suffix = {"jsonl": "jsonl", "md": "md"}.get(fmt, fmt)
        path, _ = QFileDialog.getSaveFileName(
            self, "Export results", str(Path.home() / f"extraction.{suffix}")
        )
        if path:
            self.export_to(fmt, Path(path))

    # -- showing --------------------------------------------------------------------------

    def _show_document(self) -> None:
        file = self.queue.file(self.file_id) if self.file_id is not None else None
        if file is None:
            return
        previews = self.session.previews.get(file.id, {})
        error = self.session.preview_errors.get(file.id, "")
        count = self.session.page_counts.get(file.id, 0) or file.pages_total
        self.page_panel.show_document(file.name, previews, count, error)
        self.never_send_box.blockSignals(True)
        self.never_send_box.setEnabled(True)
        self.never_send_box.setChecked(file.never_send)
        self.never_send_box.blockSignals(False)

    def _show_result(self) -> None:
        file = self.queue.file(self.file_id) if self.file_id is not None else None
        if file is None:
            return
        stored = self.queue.page(file.id, self.page)
        replot = stored.result.get("replot") if stored else None
        self.page_panel.show_page(self.page, replot)
        self.result_title.setText(f"{file.name} · page {self.page}")
        self.read_again_button.setVisible(file.status == FileStatus.FAILED)
        self.revert_button.setVisible(bool(stored and stored.has_edit))
        if stored is None:
            self._shown_result = ""
            self.editor.set_value(None)
            self.table.set_value(None)
            self.issue_list.hide()
            if file.error:  # no page of it was read: the file's own error says why
                self.result_title.setText(file.name)
                self._show_issues([{"where": "file", "message": file.error}])
            message = file.error or {
                FileStatus.QUEUED: "Waiting to be read.",
                FileStatus.RUNNING: self.session.activity.get(file.id, "Reading…"),
                FileStatus.CANCELLED: "Cancelled before this page was read.",
            }.get(file.status, "No result for this page.")
            self._badge(file_status_text(file), "error" if file.error else "")
            self.provenance.setText("" if file.error else message)
            return
        schema = self.session.schema_for(self.queue.batch(file.batch_id))
        shown = json.dumps(
            [file.id, self.page, stored.result, stored.edited, stored.has_edit, schema],
            sort_keys=True,
            default=str,
        )
        if shown == self._shown_result:
            return  # the queue moved on, not this page: a field being typed in stays open
        self._shown_result = shown
        issues, replaced = page_issues(stored.result, stored.edited, stored.has_edit, schema)
        self.editor.set_value(stored.data, issues, replaced, schema=schema)
        has_table = self.table.set_value(stored.data, issues, schema)
        self.result_tabs.setTabEnabled(1, has_table)
        self._show_issues(issues)
        status = str(stored.result.get("status"))
        errors = sum(issue.get("severity", "error") == "error" for issue in issues)
        if status == "ok" and not errors:
            self._badge("Valid" + (" · edited" if stored.has_edit else ""), "ok")
        elif status == "failed":
            self._badge("No answer", "error")
        else:
            self._badge(f"{errors} problem{'s' if errors != 1 else ''}", "warning")
        self.provenance.setText(_provenance_text(stored.result))

    def _show_issues(self, issues: list[dict[str, Any]]) -> None:
        self.issue_list.clear()
        for issue in issues:
            where = issue.get("where") or _field_name(str(issue.get("path") or ""))
            mark = "⚠" if issue.get("severity") == "warning" else "✖"
            item = QListWidgetItem(f"{mark} {where}: {issue.get('message')}")
            item.setToolTip(str(issue.get("message")))
            self.issue_list.addItem(item)
        self.issue_list.setVisible(bool(issues))

    def _badge(self, text: str, level: str) -> None:
        self.status_badge.setText(text)
        self.status_badge.setVisible(bool(text))
        set_style_property(self.status_badge, "level", level)

    # -- slots ----------------------------------------------------------------------------

    @Slot()
    def _on_session_queue_changed(self) -> None:
        files = self.session.files()
        self.queue_panel.set_files(files, self.session.running_file())
        if self.file_id is None and files:
            self.queue_panel.select(files[0].id)
        elif self.file_id is not None:
            self._show_result()

    @Slot(int, str)
    def _on_session_file_progress(self, file_id: int, activity: str) -> None:
        file = self.queue.file(file_id)
        if file is not None:
            self.queue_panel.update_file(file, self.session.running_file() == file_id, activity)

    @Slot(int, int)
    def _on_session_page_stored(self, file_id: int, page: int) -> None:
        if file_id == self.file_id and page == self.page:
            self._show_result()

    @Slot(int)
    def _on_session_document_changed(self, file_id: int) -> None:
        if file_id == self.file_id:
            self._show_result()

    @Slot(int)
    def _on_session_previews_changed(self, file_id: int) -> None:
        if file_id == self.file_id:
            self._show_document()
            self.page_panel.show_page(self.page, self._replot())

    @Slot(int)
    def _on_page_ask_requested(self, page: int) -> None:
        file = self.queue.file(self.file_id) if self.file_id is not None else None
        if file is not None:
            self.chat_about_page.emit(str(file.path), page)

    @Slot()
    def _on_read_again_clicked(self) -> None:
        if self.file_id is not None:
            self.session.retry_file(self.file_id)

    def _replot(self) -> str | None:
        stored = self.queue.page(self.file_id, self.page) if self.file_id is not None else None
        return stored.result.get("replot") if stored else None

    @Slot()
    def _on_session_schemas_changed(self) -> None:
        current = self.session.schema.key
        self.schema_combo.clear()
        for key, choice in self.session.schemas.items():
            self.schema_combo.addItem(choice.title, key)
        self.schema_combo.insertSeparator(self.schema_combo.count())
        self.schema_combo.addItem("Load a schema file…", LOAD_SCHEMA)
        self.schema_combo.addItem("Build from field names…", BUILD_SCHEMA)
        self.schema_combo.setCurrentIndex(max(0, self.schema_combo.findData(current)))

    @Slot(object)
    def _on_session_schema_checked(self, _choice: object) -> None:
        if self.banner.property("level") == "error":
            self.banner.hide()  # a good schema now: the error about the last one is old news

    @Slot(int)
    def _on_schema_activated(self, index: int) -> None:
        key = self.schema_combo.itemData(index)
        if self.banner.property("level") == "error":
            self.banner.hide()  # about the schema chosen before, most likely; a new one says anew
        if key == LOAD_SCHEMA:
            path, _ = QFileDialog.getOpenFileName(
                self, "A JSON Schema file", str(Path.home()), "JSON Schema (*.json)"
            )
            if path:
                self.session.check_schema_file(Path(path))
            self._on_session_schemas_changed()
        elif key == BUILD_SCHEMA:
            builder = SchemaBuilder(self)
            if builder.exec():
                self.session.build_schema(builder.fields(), builder.title())
            self._on_session_schemas_changed()
        elif key:
            self.session.choose_schema(str(key))
            self._remember("schema", str(key))

    @Slot(bool)
    def _on_two_pass_toggled(self, on: bool) -> None:
        self.session.two_pass = on
        self._remember("two_pass", on)

    @Slot()
    def _on_session_batch_changed(self) -> None:
        batch = self.session.batch
        self.batch_combo.blockSignals(True)
        self.batch_combo.clear()
        for entry in self.queue.batches()[:30]:
            title = entry.settings.get("schema_title") or entry.settings.get("schema") or ""
            count = len(self.queue.files(entry.id))
            self.batch_combo.addItem(f"{entry.name} · {title} · {count} files", entry.id)
        if batch is not None:
            self.batch_combo.setCurrentIndex(max(0, self.batch_combo.findData(batch.id)))
        self.batch_combo.setVisible(self.batch_combo.count() > 1)
        self.batch_combo.blockSignals(False)
        has_work = batch is not None and batch.status in (BatchStatus.ACTIVE, BatchStatus.PAUSED)
        self.queue_panel.set_batch_state(
            batch is not None and batch.status == BatchStatus.PAUSED, has_work
        )
        if (
            batch is not None
            and batch.status == BatchStatus.PAUSED
            and not self.session.is_running()
        ):
            left = sum(not f.finished for f in self.session.files())
            because = self.session.paused_because
            still = f"{left} document{'s' if left != 1 else ''} of this batch still to read."
            self.banner.show_message(
                f"{because} {still}" if because else still,
                "warning" if because else "info",
                action="Resume",
            )
        elif self.banner.action.text() == "Resume":
            self.banner.hide()

    @Slot(int)
    def _on_batch_activated(self, index: int) -> None:
        batch_id = self.batch_combo.itemData(index)
        if batch_id:
            self.file_id = None
            self.session.open_batch(str(batch_id))

    @Slot(str, str)
    def _on_session_notice(self, text: str, level: str) -> None:
        self.banner.show_message(text, level, hide_after_ms=0 if level == "error" else 8000)

    @Slot(str, str)
    def _on_session_export_finished(self, path: str, error: str) -> None:
        if error:
            self.banner.show_message(f"Export failed: {error}", "error")
        else:
            self.banner.show_message(f"Exported to {path}", "info", hide_after_ms=8000)

    @Slot(object)
    def _on_editor_data_edited(self, data: Any) -> None:
        if self.file_id is None:
            return
        self.session.save_edit(self.file_id, self.page, data)
        self._show_result()

    @Slot()
    def _on_revert_clicked(self) -> None:
        if self.file_id is not None:
            self.session.revert_edit(self.file_id, self.page)
            self._show_result()

    @Slot()
    def undo_edit(self) -> None:
        """Ctrl+Z: take back the latest edit (on any file of this session), and show it."""
        where = self.session.undo_edit()
        if where is None:
            self.banner.show_message("Nothing to undo.", "info", hide_after_ms=3000)
            return
        file_id, page = where
        if file_id != self.file_id:
            self.select_file(file_id)
        self.select_page(page)

    @Slot()
    def _on_banner_action_clicked(self) -> None:
        if self.banner.action.text() == "Resume":
            self.banner.hide()
            self.session.resume()

    @Slot(bool)
    def _on_never_send_toggled(self, on: bool) -> None:
        if self.file_id is not None:
            self.session.set_never_send(self.file_id, on)

    # -- Qt overrides ---------------------------------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.session.request_schemas()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_files(event.mimeData()):
            event.acceptProposedAction()
            set_style_property(self, "dropping", True)

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        set_style_property(self, "dropping", False)

    def dropEvent(self, event: QDropEvent) -> None:
        set_style_property(self, "dropping", False)
        files = local_files(event.mimeData())
        if files:
            event.acceptProposedAction()
            self.add_paths(files)


def _field_name(path: str) -> str:
    """/line_items/0/amount → line items #1 › amount; "" → page."""
    if not path:
        return "page"
    names = [
        f"#{int(part) + 1}" if part.isdigit() else part.replace("_", " ") for part in parts_of(path)
    ]
    return " › ".join(names)


def _provenance_text(result: dict[str, Any]) -> str:
    provenance = result.get("provenance") or {}
    if not provenance:
        return str(result.get("error") or "")
    timings = provenance.get("timings") or {}
    size = provenance.get("image_size") or []
    model = str(provenance.get("model") or "")
    parts = [
        f"{Path(model).name or model} ({provenance.get('backend')}, {provenance.get('quant')}, "
        f"{provenance.get('device')})",
        provenance.get("why") or "",
        "two passes" if provenance.get("two_pass") else "one pass",
        f"{provenance.get('attempts')} attempt{'s' if provenance.get('attempts') != 1 else ''}",
        f"{timings.get('total_s', 0):.1f} s" if timings else "",
        f"{size[0]}×{size[1]} px" if len(size) == 2 else "",
        f"{provenance.get('dpi'):.0f} dpi" if provenance.get("dpi") else "",
        f"schema {provenance.get('schema_name')} {provenance.get('schema_version')}",
        f"prompt {provenance.get('prompt_version')}",
        f"sha256 {str(provenance.get('sha256'))[:12]}…",
    ]
    return " · ".join(part for part in parts if part)
