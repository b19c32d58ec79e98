"""A small dialog that builds an extraction schema from field names and types."""

from __future__ import annotations

from typing import get_args

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.protocol import extract as px

TYPE_LABELS = {
    "text": "Text",
    "number": "Number",
    "integer": "Whole number",
    "date": "Date",
    "boolean": "Yes / no",
    "text_list": "List of texts",
}


class SchemaBuilder(QDialog):
    """Name and type per row; ``fields()`` and ``title()`` once accepted."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Build a schema")
        self.resize(520, 380)
        layout = QVBoxLayout(self)
        intro = QLabel(
            "Name the values to read from each page and say what kind each is. A value that "
            "is not on the page comes back empty."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.title_edit = QLineEdit("My fields")
        form.addRow("Name of the schema", self.title_edit)
        layout.addLayout(form)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Field", "Type", "Hint for the model (optional)"])
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        layout.addWidget(self.table, 1)
        row = QHBoxLayout()
        add = QPushButton("Add field")
        add.clicked.connect(lambda: self.add_field())
        remove = QPushButton("Remove field")
        remove.clicked.connect(self._remove_current)
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        layout.addLayout(row)
        self.error = QLabel()
        self.error.setObjectName("builderError")
        self.error.setStyleSheet("color: #b91c1c;")
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._on_accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        for name, kind in (("name", "text"), ("date", "date"), ("amount", "number")):
            self.add_field(name, kind)

    def add_field(self, name: str = "", kind: str = "text", hint: str = "") -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        self.table.setItem(row, 0, QTableWidgetItem(name))
        combo = QComboBox()
        for value in get_args(px.FieldType):
            combo.addItem(TYPE_LABELS.get(value, value), value)
        combo.setCurrentIndex(max(0, combo.findData(kind)))
        self.table.setCellWidget(row, 1, combo)
        self.table.setItem(row, 2, QTableWidgetItem(hint))

    def _remove_current(self) -> None:
        row = self.table.currentRow()
        if row >= 0:
            self.table.removeRow(row)

    def fields(self) -> list[px.FieldSpec]:
        specs = []
        for row in range(self.table.rowCount()):
            name_item, hint_item = self.table.item(row, 0), self.table.item(row, 2)
            combo = self.table.cellWidget(row, 1)
            name = name_item.text().strip() if name_item else ""
            if not name:
                continue
            kind = combo.currentData() if isinstance(combo, QComboBox) else "text"
            hint = hint_item.text().strip() if hint_item else ""
            specs.append(px.FieldSpec(name=name, type=kind, description=hint))  # type: ignore[arg-type]
        return specs

    def title(self) -> str:
        return self.title_edit.text().strip() or "Custom"

    def _on_accept(self) -> None:
        try:
            px.schema_from_fields(self.fields(), self.title())
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        self.accept()
