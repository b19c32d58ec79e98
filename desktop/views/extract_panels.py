"""The Extract page's panels: the drop zone, the batch queue, and the page with its thumbnails."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QSize, Qt, Signal, Slot
from PySide6.QtGui import (
    QBrush,
    QColor,
    QIcon,
    QImageReader,
    QPainter,
    QPaintEvent,
    QPalette,
    QPixmap,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QButtonGroup,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.extraction_queue import FileStatus, QueuedFile

FILE_ID = Qt.ItemDataRole.UserRole
STATUS_TEXT = {
    FileStatus.QUEUED: "Waiting",
    FileStatus.RUNNING: "Reading",
    FileStatus.DONE: "Done",
    FileStatus.FAILED: "Failed",
    FileStatus.CANCELLED: "Cancelled",
}
DOCUMENT_TEXT = {"ok": "Done", "partial": "Partly read", "failed": "No valid result"}
STATUS_COLORS = {
    "Done": "#15803d",
    "Partly read": "#b45309",
    "No valid result": "#b91c1c",
    "Failed": "#b91c1c",
    "Cancelled": "#6b7280",
    "Waiting": "#6b7280",
    "Reading": "#2563eb",
}


def file_status_text(file: QueuedFile) -> str:
    if file.status == FileStatus.DONE and file.document is not None:
        return DOCUMENT_TEXT.get(str(file.document.get("status")), "Done")
    return STATUS_TEXT.get(file.status, file.status)


class ElidedLabel(QLabel):
    """A one-line heading that shortens a long file name with "…" in the middle (keeping its
    end and the page number) rather than widening the window to fit it; the tooltip has it all.
    """

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setToolTip(text)

    def setText(self, text: str) -> None:
        super().setText(text)
        self.setToolTip(text)

    def paintEvent(self, event: QPaintEvent) -> None:
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(
            self.text(), Qt.TextElideMode.ElideMiddle, rect.width()
        )
        painter = QPainter(self)
        self.style().drawItemText(
            painter,
            rect,
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
            self.palette(),
            self.isEnabled(),
            text,
            QPalette.ColorRole.WindowText,
        )


class DropZone(QFrame):
    """Where files and folders are dropped (the whole page accepts drops); two buttons too."""

    add_files_clicked = Signal()
    add_folder_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dropZone")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 14, 14, 12)
        layout.setSpacing(6)
        icon = QLabel("⇣")
        icon.setObjectName("dropIcon")
        icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(icon)
        title = QLabel("Drop PDFs, images or folders")
        title.setObjectName("dropTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(title)
        note = QLabel("Invoices, receipts, forms, tables, charts and scans")
        note.setObjectName("dropNote")
        note.setWordWrap(True)
        note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(note)
        row = QHBoxLayout()
        self.files_button = QPushButton("Add files…")
        self.files_button.clicked.connect(self.add_files_clicked)
        self.folder_button = QPushButton("Add folder…")
        self.folder_button.clicked.connect(self.add_folder_clicked)
        row.addWidget(self.files_button)
        row.addWidget(self.folder_button)
        layout.addLayout(row)


class QueuePanel(QWidget):
    """The files of the current batch with their progress; pause, resume and cancel."""

    file_selected = Signal(int)
    pause_clicked = Signal()
    resume_clicked = Signal()
    cancel_clicked = Signal()
    retry_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.title = QLabel("Queue")
        self.title.setObjectName("panelHeading")
        layout.addWidget(self.title)
        self.tree = QTreeWidget()
        self.tree.setObjectName("queueList")
        self.tree.setColumnCount(2)
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setIndentation(0)
        self.tree.setUniformRowHeights(True)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(0, self.tree.header().ResizeMode.Stretch)
        self.tree.header().resizeSection(1, 118)
        self.tree.currentItemChanged.connect(self._on_current_changed)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._on_context_menu)
        layout.addWidget(self.tree, 1)
        buttons = QHBoxLayout()
        self.pause_button = QPushButton("Pause")
        self.pause_button.setObjectName("pauseButton")
        self.pause_button.clicked.connect(self._on_pause_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.clicked.connect(self.cancel_clicked)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self._items: dict[int, QTreeWidgetItem] = {}
        self._bars: dict[int, QProgressBar] = {}
        self._paused = False

    def set_files(self, files: list[QueuedFile], running: int | None) -> None:
        selected = self.selected_file()
        self.tree.blockSignals(True)
        self.tree.clear()
        self._items, self._bars = {}, {}
        for file in files:
            item = QTreeWidgetItem(self.tree, [file.name, ""])
            item.setData(0, FILE_ID, file.id)
            item.setToolTip(
                0, str(file.path) + ("\nNever sent to a cloud service" if file.never_send else "")
            )
            if file.never_send:
                item.setText(0, f"🔒 {file.name}")
            self._items[file.id] = item
            self.update_file(file, running == file.id)
        self.tree.blockSignals(False)
        done = sum(f.finished for f in files)
        self.title.setText(f"Queue · {done} of {len(files)} done" if files else "Queue")
        if selected in self._items:
            self.tree.setCurrentItem(self._items[selected])

    def update_file(self, file: QueuedFile, running: bool, activity: str = "") -> None:
        """A file being read shows a progress bar (pages); any other shows its status."""
        item = self._items.get(file.id)
        if item is None:
            return
        text = file_status_text(file)
        total = max(file.pages_total, file.pages_done)
        bar = self._bars.get(file.id)
        if running or file.status == FileStatus.RUNNING:
            if bar is None:
                bar = QProgressBar()
                bar.setObjectName("fileProgress")
                bar.setMaximumHeight(16)
                self.tree.setItemWidget(item, 1, bar)
                self._bars[file.id] = bar
            bar.setRange(0, max(total, 1))
            bar.setValue(file.pages_done)
            bar.setFormat(f"{file.pages_done}/{total} pages" if total else "Starting…")
            item.setText(1, "")
            item.setToolTip(1, activity or "Reading")
            return
        if bar is not None:
            self.tree.removeItemWidget(item, 1)
            del self._bars[file.id]
        pages = f" · {file.pages_done} p." if file.pages_done and file.finished else ""
        item.setText(1, text + pages)
        item.setForeground(1, QBrush(QColor(STATUS_COLORS.get(text, "#6b7280"))))
        item.setToolTip(1, file.error or text)

    def set_batch_state(self, paused: bool, has_work: bool) -> None:
        self._paused = paused
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_button.setEnabled(has_work)
        self.cancel_button.setEnabled(has_work)

    def selected_file(self) -> int | None:
        item = self.tree.currentItem()
        return int(item.data(0, FILE_ID)) if item is not None else None

    def select(self, file_id: int) -> None:
        item = self._items.get(file_id)
        if item is not None:
            self.tree.setCurrentItem(item)

    @Slot()
    def _on_pause_clicked(self) -> None:
        (self.resume_clicked if self._paused else self.pause_clicked).emit()

    @Slot(QTreeWidgetItem, QTreeWidgetItem)
    def _on_current_changed(self, current: QTreeWidgetItem | None, _previous: object) -> None:
        if current is not None:
            self.file_selected.emit(int(current.data(0, FILE_ID)))

    @Slot(QPoint)
    def _on_context_menu(self, position: QPoint) -> None:
        item = self.tree.itemAt(position)
        if item is None:
            return
        file_id = int(item.data(0, FILE_ID))
        menu = QMenu(self)
        menu.addAction("Read again", lambda: self.retry_requested.emit(file_id))
        menu.exec(self.tree.viewport().mapToGlobal(position))


class PagePanel(QWidget):
    """One page large (or its chart re-plot), with the file's page thumbnails below it."""

    page_selected = Signal(int)
    ask_requested = Signal(int)  # the page on screen, to ask the chat about

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        heading = QHBoxLayout()
        self.title = ElidedLabel("Preview")
        self.title.setObjectName("panelHeading")
        heading.addWidget(self.title, 1)
        self.page_button = QPushButton("Page")
        self.replot_button = QPushButton("Re-plot")
        group = QButtonGroup(self)
        for button in (self.page_button, self.replot_button):
            button.setCheckable(True)
            button.setObjectName("segment")
            group.addButton(button)
            heading.addWidget(button)
            button.hide()  # shown for a chart whose series can be drawn again
        self.page_button.setChecked(True)
        self.page_button.toggled.connect(self._refresh)
        self.ask_button = QPushButton("Ask in chat")
        self.ask_button.setToolTip("A new chat about this page, the page attached")
        self.ask_button.setEnabled(False)
        self.ask_button.clicked.connect(self._on_ask_clicked)
        heading.addWidget(self.ask_button)
        self.replot_button.setToolTip("The extracted series drawn beside the original chart")
        layout.addLayout(heading)
        self.scroller = QScrollArea()
        self.scroller.setObjectName("pageScroll")
        self.scroller.setWidgetResizable(True)
        self.scroller.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image = QLabel("Drop a document to see its pages here.")
        self.image.setObjectName("pageImage")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setWordWrap(
            True
        )  # a long reason for "No preview" wraps; pictures are unaffected
        self.image.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.scroller.setWidget(self.image)
        layout.addWidget(self.scroller, 1)
        self.thumbnails = QListWidget()
        self.thumbnails.setObjectName("thumbnailStrip")
        self.thumbnails.setViewMode(QListView.ViewMode.IconMode)
        self.thumbnails.setFlow(QListView.Flow.LeftToRight)
        self.thumbnails.setWrapping(False)
        self.thumbnails.setIconSize(QSize(64, 84))
        self.thumbnails.setFixedHeight(122)
        self.thumbnails.setMovement(QListView.Movement.Static)
        self.thumbnails.setSpacing(4)
        self.thumbnails.currentRowChanged.connect(self._on_thumbnail_changed)
        layout.addWidget(self.thumbnails)
        self._page_path: str | None = None
        self._replot_path: str | None = None
        self._pixmap = QPixmap()
        self.current_page = 0

    def show_document(
        self, name: str, pages: dict[int, str], page_count: int, error: str = ""
    ) -> None:
        """Every page has a thumbnail, so each can be opened; one not rendered yet shows a blank
        one (opening it asks for it)."""
        self.thumbnails.blockSignals(True)
        self.thumbnails.clear()
        blank = QIcon(_blank_page())
        for number in sorted(set(pages) | set(range(1, page_count + 1))):
            icon = QIcon(_scaled(pages[number], 84)) if number in pages else blank
            item = QListWidgetItem(icon, str(number))
            item.setData(FILE_ID, number)
            item.setToolTip(f"Page {number}")
            self.thumbnails.addItem(item)
        self.thumbnails.blockSignals(False)
        self.title.setText(name)
        self._pages = pages
        self._page_count = page_count or len(pages)
        if error:
            self._page_path = None
            self._pixmap = QPixmap()
            self.image.setText(f"No preview: {error}")  # (setText also drops any picture)
        elif not pages:
            self.image.setText("Rendering the pages…")

    def show_page(self, number: int, replot: str | None) -> None:
        self.current_page = number
        self._page_path = getattr(self, "_pages", {}).get(number)
        self._replot_path = replot
        self.replot_button.setEnabled(bool(replot))
        self.page_button.setVisible(bool(replot))
        self.replot_button.setVisible(bool(replot))
        if not replot:
            self.page_button.setChecked(True)
        for row in range(self.thumbnails.count()):
            item = self.thumbnails.item(row)
            if item.data(FILE_ID) == number:
                self.thumbnails.blockSignals(True)
                self.thumbnails.setCurrentRow(row)
                self.thumbnails.blockSignals(False)
        count = getattr(self, "_page_count", 0)
        name = self.title.text().split(" · ")[0]
        self.title.setText(f"{name} · page {number} of {count}" if count else name)
        self._refresh()

    @Slot()
    def _refresh(self) -> None:
        self.ask_button.setEnabled(self._page_path is not None)
        path = self._replot_path if self.replot_button.isChecked() else self._page_path
        self._pixmap = QPixmap(path) if path else QPixmap()
        self._fit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self._pixmap.isNull():
            if self._page_path is None and not self.image.text():
                self.image.setText("Rendering the page…")
            return
        width = max(100, self.scroller.viewport().width() - 8)
        self.image.setPixmap(
            self._pixmap.scaledToWidth(
                min(width, self._pixmap.width() * 2), Qt.TransformationMode.SmoothTransformation
            )
        )

    @Slot()
    def _on_ask_clicked(self) -> None:
        self.ask_requested.emit(self.current_page)

    @Slot(int)
    def _on_thumbnail_changed(self, row: int) -> None:
        item = self.thumbnails.item(row)
        if item is not None:
            self.page_selected.emit(int(item.data(FILE_ID)))


def _blank_page() -> QPixmap:
    pixmap = QPixmap(64, 84)
    pixmap.fill(QColor("#e5e7eb"))
    return pixmap


def _scaled(path: str | Path, size: int) -> QPixmap:
    reader = QImageReader(str(path))
    original = reader.size()
    if original.isValid():
        reader.setScaledSize(original.scaled(QSize(size, size), Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    return QPixmap.fromImage(image) if not image.isNull() else QPixmap()
