"""The Search view's two lists: the files the index skipped, and the indexed folders."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.protocol import search as ps
from engine.protocol.wording import counted


def _table(rows: int, headers: list[str]) -> QTableWidget:
    """A read-only table of ``rows`` under ``headers``."""
    table = QTableWidget(rows, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().hide()
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    return table


class SkippedDialog(QDialog):
    """Files the index could not read, and why."""

    def __init__(
        self, skipped: list[ps.SkippedFile], total: int, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Skipped files")
        self.resize(760, 420)
        layout = QVBoxLayout(self)
        note = QLabel(
            f"{counted(total, 'file')} could not be indexed. Fix or replace them and index again; "
            "unchanged files are not retried."
        )
        note.setWordWrap(True)
        layout.addWidget(note)
        self.table = _table(len(skipped), ["File", "Reason"])
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for row, entry in enumerate(skipped):
            name = QTableWidgetItem(Path(entry.path).name)
            name.setToolTip(entry.path)
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, QTableWidgetItem(entry.reason))
        self.table.resizeColumnToContents(0)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


class FoldersDialog(QDialog):
    """The indexed folders, and a way to remove some from the index (the files stay on disk).

    A folder gone from disk (deleted, or on a drive not mounted now) is marked: it is left out of
    updates and results until it comes back or is removed here.
    """

    def __init__(self, folders: list[ps.IndexedFolder], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Indexed folders")
        self.resize(760, 360)
        self.folders = list(folders)
        layout = QVBoxLayout(self)
        self.table = _table(len(self.folders), ["Folder", "Images", "State"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2):  # "gone from disk" whole, not cut to "gone from …"
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        for row, folder in enumerate(self.folders):
            path = QTableWidgetItem(folder.path)
            path.setToolTip(folder.path)
            self.table.setItem(row, 0, path)
            self.table.setItem(row, 1, QTableWidgetItem(str(folder.items)))
            state = QTableWidgetItem("gone from disk" if folder.gone else "")
            if folder.gone:
                state.setForeground(QColor("#b45309"))
                state.setToolTip("Deleted or not mounted: left out of updates and results.")
            self.table.setItem(row, 2, state)
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.remove_button = buttons.addButton(
            "Remove from index", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.remove_button.setToolTip("Forget the selected folders; their files stay on disk")
        self.remove_button.setEnabled(False)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def selected_folders(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectedIndexes()})
        return [self.folders[row].path for row in rows]

    @Slot()
    def _on_table_selection_changed(self) -> None:
        self.remove_button.setEnabled(bool(self.selected_folders()))
