"""The Search screen: a query box, a lazily filled thumbnail grid, and indexing with ETA and cancel.

The view talks to the engine only through commands (``search_query``, ``get_thumbnails``,
``index_folders``, ``search_status``, ``remove_folders``) on an object with ``send(command)``,
``cancel(job_id)`` and an ``event_received`` signal (``EngineClient``). Thumbnails are asked for
only when the grid paints a cell, a few dozen per request, and kept in a bounded cache, so a
result list of thousands scrolls smoothly.
"""

from __future__ import annotations

import base64
import collections
import sys
import uuid
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QProcess,
    QRect,
    QSize,
    Qt,
    QTimer,
    QUrl,
    Signal,
    Slot,
)
from PySide6.QtGui import (
    QColor,
    QDesktopServices,
    QFont,
    QImage,
    QPainter,
    QPainterPath,
    QPen,
    QPixmap,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.views.search_dialogs import FoldersDialog, SkippedDialog
from engine import protocol as p
from engine.protocol import search as ps
from engine.protocol.wording import counted

HIT_ROLE = Qt.ItemDataRole.UserRole + 1
CELL = QSize(184, 212)
IMAGE_HEIGHT = 132
THUMBNAILS_PER_REQUEST = 48
REQUESTS_IN_FLIGHT = 2
CACHE_SIZE = 4000
DEFAULT_TOP_K = 500
IndexLike = QModelIndex | QPersistentModelIndex


class SearchResultsModel(QAbstractListModel):
    """Hits for the grid. A cell without its thumbnail asks for it (``thumbnails_needed``)."""

    thumbnails_needed = Signal(list)  # content ids, batched on a short timer

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.hits: list[ps.SearchHit] = []
        self._rows_of: dict[int, list[int]] = {}
        self._pixmaps: collections.OrderedDict[int, QPixmap] = collections.OrderedDict()
        self._wanted: dict[int, None] = {}  # ordered set: asked for, not yet requested
        self._requested: set[int] = set()
        self._timer = QTimer(self, singleShot=True, interval=15)
        self._timer.timeout.connect(self._flush)

    # -- contents -------------------------------------------------------------------------
    def set_hits(self, hits: list[ps.SearchHit]) -> None:
        self.beginResetModel()
        self.hits = list(hits)
        self._rows_of = {}
        for row, hit in enumerate(self.hits):
            self._rows_of.setdefault(hit.id, []).append(row)
        self._wanted.clear()
        self._requested.clear()
        self.endResetModel()

    def set_thumbnail(self, content_id: int, pixmap: QPixmap) -> None:
        self._requested.discard(content_id)
        self._pixmaps[content_id] = pixmap
        self._pixmaps.move_to_end(content_id)
        while len(self._pixmaps) > CACHE_SIZE:
            self._pixmaps.popitem(last=False)
        for row in self._rows_of.get(content_id, []):
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    def forget_request(self, content_ids: list[int]) -> None:
        """A request failed: let the cells ask again when they are painted next."""
        self._requested.difference_update(content_ids)

    def hit(self, row: int) -> ps.SearchHit | None:
        return self.hits[row] if 0 <= row < len(self.hits) else None

    # -- Qt -------------------------------------------------------------------------------
    def rowCount(self, parent: IndexLike = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.hits)

    def data(self, index: IndexLike, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        hit = self.hit(index.row()) if index.isValid() else None
        if hit is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(hit.path).name + (f" · p. {hit.page + 1}" if hit.page else "")
        if role == Qt.ItemDataRole.DecorationRole:
            pixmap = self._pixmaps.get(hit.id)
            if pixmap is None:
                self._want(hit.id)
            return pixmap
        if role == Qt.ItemDataRole.ToolTipRole:
            return tooltip(hit)
        if role == HIT_ROLE:
            return hit
        return None

    def _want(self, content_id: int) -> None:
        if content_id in self._requested or content_id in self._wanted:
            return
        self._wanted[content_id] = None
        if not self._timer.isActive():
            self._timer.start()

    @Slot()
    def _flush(self) -> None:
        ids = list(self._wanted)
        self._wanted.clear()
        self._requested.update(ids)
        if ids:
            self.thumbnails_needed.emit(ids)


def tooltip(hit: ps.SearchHit) -> str:
    page = f", page {hit.page + 1}" if hit.page else ""
    lines = [f"<b>{_escape(Path(hit.path).name)}</b>{page}", f"score {hit.score:.3f}"]
    lines.append(f"{hit.width} × {hit.height}")
    if hit.tags:
        lines.append("tags: " + ", ".join(_escape(tag) for tag in hit.tags))
    lines.append(f"<span style='color:#9ca3af'>{_escape(hit.path)}</span>")
    if hit.duplicates:
        lines.append(f"also at {counted(len(hit.duplicates), 'other place')}")
    return "<br>".join(lines)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class ResultGrid(QListView):
    """An icon grid whose cells widen to share the row's width, so the grid has no ragged gap."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(200)
        self.setGridSize(CELL)
        self.setMouseTracking(True)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)

    def resizeEvent(self, event: QResizeEvent) -> None:
        # The icon layout keeps room for the scroll bar whether it shows or not; so does this,
        # else a row holds one cell fewer than counted and a column's width is left empty.
        bar = self.style().pixelMetric(
            QStyle.PixelMetric.PM_ScrollBarExtent, None, self.verticalScrollBar()
        )
        width = self.maximumViewportSize().width() - bar - 2
        columns = max(1, width // CELL.width())
        self.setGridSize(QSize(max(CELL.width(), width // columns), CELL.height()))
        super().resizeEvent(event)


class ThumbnailDelegate(QStyledItemDelegate):
    """A card: the picture fitted in a box, the file name, the score."""

    def __init__(self, grid: QListView) -> None:
        super().__init__(grid)
        self.grid = grid

    def sizeHint(self, option: QStyleOptionViewItem, index: IndexLike) -> QSize:
        return self.grid.gridSize()

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: IndexLike) -> None:
        hit: ps.SearchHit | None = index.data(HIT_ROLE)
        if hit is None:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect: QRect = option.rect.adjusted(6, 6, -6, -6)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
        card = QPainterPath()
        card.addRoundedRect(rect, 10, 10)
        painter.fillPath(card, QColor("#ffffff"))
        border = "#2563eb" if selected else ("#9ca3af" if hovered else "#e5e7eb")
        painter.setPen(QPen(QColor(border), 2 if selected else 1))
        painter.drawPath(card)
        box = QRect(rect.left() + 8, rect.top() + 8, rect.width() - 16, IMAGE_HEIGHT)
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            scaled = pixmap.size().scaled(box.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(QPoint(0, 0), scaled)
            target.moveCenter(box.center())
            painter.drawPixmap(target, pixmap)
        else:
            placeholder = QPainterPath()
            placeholder.addRoundedRect(box, 6, 6)
            painter.fillPath(placeholder, QColor("#f1f3f6"))
        text_left = rect.left() + 10
        width = rect.width() - 20
        name = painter.fontMetrics().elidedText(
            index.data(Qt.ItemDataRole.DisplayRole), Qt.TextElideMode.ElideMiddle, width
        )
        painter.setPen(QColor("#1f2937"))
        painter.drawText(
            QRect(text_left, box.bottom() + 10, width, 18), Qt.AlignmentFlag.AlignLeft, name
        )
        small = QFont(painter.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() - 1.5))
        painter.setFont(small)
        painter.setPen(QColor("#6b7280"))
        detail = f"{hit.score:.3f}" + (f" · {', '.join(hit.tags)}" if hit.tags else "")
        detail = painter.fontMetrics().elidedText(detail, Qt.TextElideMode.ElideRight, width)
        painter.drawText(
            QRect(text_left, box.bottom() + 30, width, 16), Qt.AlignmentFlag.AlignLeft, detail
        )
        painter.restore()


class SearchView(QWidget):
    """Search by text, by image or both; index folders; hand a result to chat or extraction."""

    chat_about_image = Signal(str)
    extract_from_image = Signal(str)
    results_shown = Signal(int)  # number of hits, after every query
    index_finished = Signal(str, dict)  # reason, result
    status_updated = Signal(object)  # protocol.search.SearchIndexStatus

    def __init__(self, client: Any, data_dir: str | Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.data_dir = str(data_dir)
        self.status: ps.SearchIndexStatus | None = None
        self.query_image: str | None = None
        self.top_k = DEFAULT_TOP_K
        self._query_job: str | None = None
        self._status_job: str | None = None
        self._index_job: str | None = None
        self._remove_job: str | None = None
        self._cancelling = False
        self._tag_labels: list[str] = []
        self._thumbnail_jobs: dict[str, list[int]] = {}
        self._thumbnail_queue: collections.deque[list[int]] = collections.deque()
        self.setObjectName("searchView")
        self.setStyleSheet(STYLE)
        self.results = SearchResultsModel(self)
        self.results.thumbnails_needed.connect(self._on_results_thumbnails_needed)
        self._build()
        client.event_received.connect(self._on_client_event)
        self.refresh_status()

    # -- building -------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 16, 20, 12)
        layout.setSpacing(10)
        header = QHBoxLayout()
        title = QLabel("Search")
        title.setObjectName("searchTitle")
        header.addWidget(title)
        header.addStretch(1)
        header.addWidget(QLabel("Model"))
        self.model_box = QComboBox()
        self.model_box.setObjectName("searchModel")
        self.model_box.setEditable(True)
        self.model_box.setMinimumWidth(320)
        editor = self.model_box.lineEdit()
        if editor is not None:
            editor.setPlaceholderText("CLIP or SigLIP folder / repo id")
        self.model_box.currentTextChanged.connect(self.model_box.setToolTip)  # a long path whole
        header.addWidget(self.model_box)
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.clicked.connect(self._on_add_folder_clicked)
        header.addWidget(self.add_folder_button)
        self.reindex_button = QPushButton("Update index")
        self.reindex_button.setToolTip("Look for new, changed and deleted files in every folder")
        self.reindex_button.clicked.connect(lambda: self.index_folders([]))
        header.addWidget(self.reindex_button)
        layout.addLayout(header)

        query = QFrame()
        query.setObjectName("queryBar")
        row = QHBoxLayout(query)
        row.setContentsMargins(10, 6, 6, 6)
        self.query_edit = QLineEdit()
        self.query_edit.setObjectName("queryEdit")
        self.query_edit.setPlaceholderText(
            "Describe what you are looking for: “receipt from the hardware store”"
        )
        self.query_edit.setClearButtonEnabled(True)
        self.query_edit.returnPressed.connect(self.search)
        row.addWidget(self.query_edit, 1)
        self.image_chip = QToolButton()
        self.image_chip.setObjectName("imageChip")
        self.image_chip.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.image_chip.clicked.connect(self._on_image_chip_clicked)
        row.addWidget(self.image_chip)
        self.tag_box = QComboBox()
        self.tag_box.setObjectName("tagFilter")
        self.tag_box.setToolTip("Only images with this zero-shot tag")
        row.addWidget(self.tag_box)
        self.search_button = QPushButton("Search")
        self.search_button.setObjectName("primaryButton")
        self.search_button.clicked.connect(self.search)
        row.addWidget(self.search_button)
        layout.addWidget(query)
        self._show_query_image()
        self._fill_tags([])

        self.progress_row = QFrame()
        self.progress_row.setObjectName("progressRow")
        progress = QHBoxLayout(self.progress_row)
        progress.setContentsMargins(12, 6, 8, 6)
        self.progress_label = QLabel()
        progress.addWidget(self.progress_label, 1)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setFixedWidth(220)
        progress.addWidget(self.progress_bar)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_indexing)
        progress.addWidget(self.cancel_button)
        self.progress_row.hide()
        layout.addWidget(self.progress_row)

        info = QHBoxLayout()
        # The last outcome (a query's, an index run's, an error) stays here; the index's counts
        # go on the folders button, so that a status refresh never hides an outcome.
        self.info_label = QLabel()
        self.info_label.setObjectName("searchInfo")
        self.info_label.setWordWrap(True)  # a gone folder's long path wraps instead of
        # squeezing the link beside it, the way to the folder list
        info.addWidget(self.info_label, 1)
        self.folders_button = QPushButton()
        self.folders_button.setObjectName("linkButton")
        self.folders_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.folders_button.setToolTip("The indexed folders; remove one from the index")
        self.folders_button.clicked.connect(self.show_folders)
        self.folders_button.hide()
        self.folders_button.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        info.addWidget(self.folders_button, 0, Qt.AlignmentFlag.AlignTop)
        self.skipped_button = QPushButton()
        self.skipped_button.setObjectName("linkButton")
        self.skipped_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.skipped_button.clicked.connect(self.show_skipped)
        self.skipped_button.hide()
        info.addWidget(self.skipped_button)
        layout.addLayout(info)

        self.stack = QStackedWidget()
        self.empty = QLabel()
        self.empty.setObjectName("searchEmpty")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.stack.addWidget(self.empty)
        self.grid = ResultGrid()
        self.grid.setObjectName("resultGrid")
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.grid.setModel(self.results)
        self.grid.setItemDelegate(ThumbnailDelegate(self.grid))
        # Enter, or a double-click (a single click where the desktop opens on one).
        self.grid.activated.connect(lambda index: self.open_hit(index.row()))
        self.grid.customContextMenuRequested.connect(self._on_grid_context_menu)
        self.stack.addWidget(self.grid)
        layout.addWidget(self.stack, 1)
        self._show_empty("Add a folder to search your images by what is in them.")

    # -- public API -------------------------------------------------------------------------
    def model_name(self) -> str:
        return self.model_box.currentText().strip()

    def set_model(self, name: str) -> None:
        if self.model_box.findText(name) < 0:
            self.model_box.addItem(name)
        self.model_box.setCurrentText(name)

    def refresh_status(self) -> None:
        self._status_job = self._send(ps.SearchStatus(job_id=_new_id(), data_dir=self.data_dir))

    def search(self) -> None:
        text = self.query_edit.text().strip()
        if not text and not self.query_image:
            self.info_label.setText("Type what you are looking for, or choose an image.")
            return
        tag = self.tag_box.currentData()
        command = ps.SearchQuery(
            job_id=_new_id(),
            data_dir=self.data_dir,
            text=text,
            image=self.query_image,
            model=self.model_name() or None,
            top_k=self.top_k,
            tags=[tag] if tag else [],
        )
        # An earlier query still on its way is not cancelled (it may be queued behind indexing,
        # where a cancel would wait too); its answer is simply ignored.
        self._query_job = self._send(command)
        waiting = " (after the indexing in progress)" if self._index_job else ""
        self.info_label.setText(f"Searching{waiting}…")

    def find_similar(self, path: str) -> None:
        self.set_query_image(path)
        self.query_edit.clear()
        self.search()

    def set_query_image(self, path: str | None) -> None:
        self.query_image = path
        self._show_query_image()

    def is_indexing(self) -> bool:
        return self._index_job is not None

    def index_folders(self, folders: list[str]) -> str | None:
        """Start indexing ``folders`` (empty: every indexed folder); the job id, or None."""
        model = self.model_name()
        if not model:
            self.info_label.setText("Choose an embedding model (CLIP or SigLIP) first.")
            self.model_box.setFocus()
            return None
        if self._index_job is not None:
            return self._index_job
        command = ps.IndexFolders(
            job_id=_new_id(), data_dir=self.data_dir, model=model, folders=folders
        )
        self._index_job = self._send(command)
        self._cancelling = False
        self.progress_label.setText("Starting…")
        self.progress_bar.setRange(0, 0)
        self.progress_row.show()
        self.cancel_button.setEnabled(True)
        return self._index_job

    def cancel_indexing(self) -> None:
        if self._index_job is not None:
            self.client.cancel(self._index_job)
            self._cancelling = True
            self.cancel_button.setEnabled(False)
            self.progress_label.setText("Stopping after the current batch…")

    def show_skipped(self) -> None:
        if self.status is not None:
            SkippedDialog(self.status.skipped, self.status.skipped_total, self).exec()

    def show_folders(self) -> FoldersDialog | None:
        """The folder list (window-modal, not blocking); "Remove from index" forgets folders."""
        if self.status is None:
            return None
        dialog = FoldersDialog(self.status.folders, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.remove_folders(dialog.selected_folders()))
        dialog.open()
        return dialog

    def remove_folders(self, folders: list[str]) -> None:
        """Forget folders in the index: their entries and thumbnails, not their files."""
        if folders:
            command = ps.RemoveFolders(job_id=_new_id(), data_dir=self.data_dir, folders=folders)
            self._remove_job = self._send(command)

    def open_hit(self, row: int) -> None:
        hit = self.results.hit(row)
        if hit is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(hit.path))

    def reveal_hit(self, row: int) -> None:
        hit = self.results.hit(row)
        if hit is not None:
            reveal_in_folder(hit.path)

    # -- engine events ----------------------------------------------------------------------
    def _send(self, command: Any) -> str:
        self.client.send(command)
        return str(command.job_id)

    @Slot(object)
    def _on_client_event(self, event: p.Event) -> None:
        job_id = getattr(event, "job_id", None)
        if job_id is None:
            return
        if job_id == self._index_job:
            self._on_index_event(event)
        elif isinstance(event, p.Finished):
            if job_id == self._query_job:
                self._query_job = None
                self._on_query_finished(event)
            elif job_id == self._status_job:
                self._status_job = None
                self._on_status_finished(event)
            elif job_id == self._remove_job:
                self._remove_job = None
                self._on_remove_finished(event)
            elif job_id in self._thumbnail_jobs:
                self._on_thumbnails_finished(self._thumbnail_jobs.pop(job_id), event)

    def _on_query_finished(self, event: p.Finished) -> None:
        if event.reason != "done":
            self._show_error(event)
            return
        hits = ps.decode_hits(event.result)
        self.results.set_hits(hits)
        result = event.result or {}
        kind = "exact" if result.get("exact") else "approximate"
        what = f"“{self.query_edit.text().strip()}”" if self.query_edit.text().strip() else ""
        if self.query_image:
            what = f"{what} + image" if what else f"images like {Path(self.query_image).name}"
        self.info_label.setText(
            f"{len(hits)} results for {what} · {kind} search over {result.get('vectors', 0)} images"
            f" · {result.get('elapsed_ms', 0):.0f} ms"
        )
        if hits:
            self.stack.setCurrentWidget(self.grid)
            self.grid.scrollToTop()
        else:
            self._show_empty("Nothing matched. Try other words, or remove the tag filter.")
        self.results_shown.emit(len(hits))

    def _on_status_finished(self, event: p.Finished) -> None:
        if event.reason != "done":
            return
        status = ps.decode_status(event.result)
        self.status = status
        current = self.model_name()
        names = [model.name for model in status.models]
        self.model_box.blockSignals(True)
        for name in names:
            if self.model_box.findText(name) < 0:
                self.model_box.addItem(name)
        if not current and names:
            self.model_box.setCurrentText(names[0])
        self.model_box.blockSignals(False)
        labels = next((m.labels for m in status.models if m.name == self.model_name()), [])
        self._fill_tags(labels)
        gone = sum(folder.gone for folder in status.folders)
        text = f"{counted(status.items, 'image')} in {counted(len(status.folders), 'folder')}"
        self.folders_button.setText(text + (f" ({gone} gone)" if gone else ""))
        self.folders_button.setVisible(bool(status.folders))
        if status.folders:
            if not self.results.hits:
                self._show_empty("Type what you are looking for above, or drop in an image.")
        else:
            self._show_empty("Add a folder to search your images by what is in them.")
        self.skipped_button.setText(f"{status.skipped_total} skipped")
        self.skipped_button.setVisible(status.skipped_total > 0)
        self.status_updated.emit(status)

    def _on_index_event(self, event: p.Event) -> None:
        if isinstance(event, p.Progress):
            if event.total:
                self.progress_bar.setRange(0, int(event.total))
                self.progress_bar.setValue(int(event.current))
            else:
                self.progress_bar.setRange(0, 0)
            if event.message:
                self.progress_label.setText(f"{event.stage.capitalize()}: {event.message}")
            # The last step (the approximate-search index) cannot stop half-way.
            self.cancel_button.setEnabled(event.stage != "ann" and not self._cancelling)
        elif isinstance(event, p.Finished):
            self._index_job = None
            self.progress_row.hide()
            result = event.result or {}
            if event.reason == "error":
                self._show_error(event)
            else:
                done = "Indexed" if event.reason == "done" else "Stopped;"
                text = (
                    f"{done} {result.get('embedded', 0)} new, {result.get('reused', 0)} recognised, "
                    f"{result.get('removed', 0)} removed, {result.get('skipped', 0)} skipped"
                )
                gone = result.get("gone", [])
                if gone:
                    text = _escape(text) + "".join(
                        f"<br><span style='color:#b45309'>{_escape(folder['path'])} is gone "
                        f"and left out of results ({counted(folder['items'], 'image')} kept). "
                        "Reconnect it, or remove it from the index in the folder list.</span>"
                        for folder in gone
                    )
                self.info_label.setText(text)
            self.index_finished.emit(event.reason, result)
            self.refresh_status()

    def _on_remove_finished(self, event: p.Finished) -> None:
        if event.reason != "done":
            self._show_error(event)
            return
        result = event.result or {}
        folders = "; ".join(result.get("folders", []))
        self.info_label.setText(
            f"Removed {counted(result.get('removed', 0), 'image')} of {folders} from the index "
            "(the files stay on disk)."
        )
        self.refresh_status()

    def _show_error(self, event: p.Finished) -> None:
        self.info_label.setText(
            f"<span style='color:#b91c1c'>{_escape(event.message or event.reason)}</span>"
        )

    # -- thumbnails ---------------------------------------------------------------------------
    @Slot(list)
    def _on_results_thumbnails_needed(self, ids: list[int]) -> None:
        for start in range(0, len(ids), THUMBNAILS_PER_REQUEST):
            self._thumbnail_queue.append(ids[start : start + THUMBNAILS_PER_REQUEST])
        self._request_thumbnails()

    def _request_thumbnails(self) -> None:
        while self._thumbnail_queue and len(self._thumbnail_jobs) < REQUESTS_IN_FLIGHT:
            ids = self._thumbnail_queue.popleft()
            command = ps.GetThumbnails(job_id=_new_id(), data_dir=self.data_dir, ids=ids)
            self._thumbnail_jobs[self._send(command)] = ids

    def _on_thumbnails_finished(self, ids: list[int], event: p.Finished) -> None:
        thumbnails = (event.result or {}).get("thumbnails", {}) if event.reason == "done" else {}
        for key, data in thumbnails.items():
            image = QImage.fromData(base64.b64decode(data))
            if not image.isNull():
                self.results.set_thumbnail(int(key), QPixmap.fromImage(image))
        self.results.forget_request([i for i in ids if str(i) not in thumbnails])
        self._request_thumbnails()

    # -- small pieces ---------------------------------------------------------------------------
    def _fill_tags(self, labels: list[str]) -> None:
        current = self.tag_box.currentData()
        self.tag_box.clear()
        self.tag_box.addItem("All images", None)
        for label in labels:
            self.tag_box.addItem(f"Tag: {label}", label)
        self.tag_box.setVisible(bool(labels))
        if current in labels:
            self.tag_box.setCurrentIndex(labels.index(current) + 1)

    def _show_query_image(self) -> None:
        if self.query_image:
            self.image_chip.setText(f"{Path(self.query_image).name}  ✕")
            self.image_chip.setToolTip("Searching for images like this one. Click to remove it.")
        else:
            self.image_chip.setText("Image…")
            self.image_chip.setToolTip("Find images similar to one of yours (add words to refine)")

    def _show_empty(self, text: str) -> None:
        self.empty.setText(text)
        self.stack.setCurrentWidget(self.empty)

    @Slot()
    def _on_image_chip_clicked(self) -> None:
        if self.query_image:
            self.set_query_image(None)
            return
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Find images like…",
            "",
            "Images (*.png *.jpg *.jpeg *.webp *.bmp *.gif *.tif *.tiff *.heic)",
        )
        if path:
            self.set_query_image(path)
            self.search()

    @Slot()
    def _on_add_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder to the search index")
        if folder:
            self.index_folders([folder])

    @Slot(QPoint)
    def _on_grid_context_menu(self, position: QPoint) -> None:
        index = self.grid.indexAt(position)
        hit = self.results.hit(index.row()) if index.isValid() else None
        if hit is None:
            return
        menu = self.hit_menu(hit, index.row())
        menu.exec(self.grid.viewport().mapToGlobal(position))

    def hit_menu(self, hit: ps.SearchHit, row: int) -> QMenu:
        menu = QMenu(self)
        menu.addAction("Open", lambda: self.open_hit(row))
        menu.addAction("Show in folder", lambda: self.reveal_hit(row))
        menu.addAction("Copy path", lambda: QApplication.clipboard().setText(hit.path))
        menu.addAction("Find similar images", lambda: self.find_similar(hit.path))
        menu.addSeparator()
        menu.addAction("Chat about this image", lambda: self.chat_about_image.emit(hit.path))
        menu.addAction("Extract from this image", lambda: self.extract_from_image.emit(hit.path))
        return menu


def reveal_in_folder(path: str) -> None:
    """The file selected in the system's file manager where that is possible, else its folder."""
    if sys.platform == "darwin":
        QProcess.startDetached("open", ["-R", path])
    elif sys.platform == "win32":
        QProcess.startDetached("explorer", ["/select,", str(Path(path))])
    else:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent)))


def _new_id() -> str:
    return uuid.uuid4().hex


STYLE = """
QWidget#searchView { background: #f7f8fa; color: #1f2937; }
QLabel#searchTitle { font-size: 17pt; font-weight: 700; color: #111827; }
QFrame#queryBar { background: #ffffff; border: 1px solid #d1d5db; border-radius: 10px; }
QLineEdit#queryEdit { border: none; font-size: 11.5pt; padding: 6px 4px; background: transparent; }
QToolButton#imageChip {
    background: #eef2ff; color: #3730a3; border: 1px solid #c7d2fe; border-radius: 12px;
    padding: 4px 10px;
}
QToolButton#imageChip:hover { background: #e0e7ff; }
QWidget#searchView QPushButton#primaryButton {
    background: #2563eb; color: #ffffff; border: none; border-radius: 7px;
    padding: 7px 18px; font-weight: 600;
}
QWidget#searchView QPushButton#primaryButton:hover { background: #1d4ed8; }
QFrame#progressRow { background: #eff6ff; border: 1px solid #bfdbfe; border-radius: 8px; }
QFrame#progressRow QLabel { color: #1e3a8a; }
QProgressBar { background: #dbeafe; border: none; border-radius: 4px; height: 8px; }
QProgressBar::chunk { background: #2563eb; border-radius: 4px; }
QLabel#searchInfo { color: #4b5563; }
QLabel#searchEmpty { color: #6b7280; font-size: 12pt; }
QListView#resultGrid { background: #f7f8fa; border: none; }
QWidget#searchView QPushButton {
    background: #ffffff; border: 1px solid #d1d5db; border-radius: 6px; padding: 5px 12px;
}
QWidget#searchView QPushButton:hover { background: #f9fafb; border-color: #9ca3af; }
QWidget#searchView QPushButton:disabled { color: #9ca3af; }
QWidget#searchView QPushButton#linkButton {
    background: transparent; border: none; color: #b45309; text-decoration: underline;
}
"""
