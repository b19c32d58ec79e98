"""Editors for an extracted JSON value: a field tree and a table of its records (rows, line
items), both editable, with the fields that failed validation or checks highlighted."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from PySide6.QtCore import QPoint, Qt, Signal, Slot
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QMenu,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

POINTER = Qt.ItemDataRole.UserRole
NULL_TEXT = "—"
COLORS = {
    "error": ("#fde8e8", "#991b1b"),
    "warning": ("#fff4d6", "#92400e"),
    "edited": ("#eaf1ff", "#1d4ed8"),
}


# --- JSON pointers -------------------------------------------------------------------------------


def pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def parts_of(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def get_at(data: Any, path: str) -> Any:
    for part in parts_of(path):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def set_at(data: Any, path: str, value: Any) -> Any:
    """A copy of ``data`` with ``value`` at ``path``."""
    if not path:
        return value
    data = copy.deepcopy(data)
    *head, last = parts_of(path)
    node = data
    for part in head:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def changed_pointers(before: Any, after: Any, path: str = "") -> set[str]:
    """Where ``after`` differs from ``before`` (the deepest differing pointers)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: set[str] = set()
        for key in set(before) | set(after):
            sub = f"{path}/{pointer([key])[1:]}"
            if key not in before or key not in after:
                found.add(sub)
            else:
                found |= changed_pointers(before[key], after[key], sub)
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        found = set()
        for index, (old, new) in enumerate(zip(before, after, strict=True)):
            found |= changed_pointers(old, new, f"{path}/{index}")
        return found
    return set() if before == after and type(before) is type(after) else {path}


def display(value: Any) -> str:
    if value is None:
        return NULL_TEXT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        count = len(value)
        noun = "field" if isinstance(value, dict) else "item"
        return f"{count} {noun}{'s' if count != 1 else ''}"
    return str(value)


def schema_types(schema: dict[str, Any] | None, path: str) -> set[str] | None:
    """The JSON types the schema allows at ``path`` (None when it does not say)."""
    if not schema:
        return None
    node: Any = _resolve(schema, schema)
    for part in parts_of(path):
        if not isinstance(node, dict):
            return None
        properties = node.get("properties") or {}
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("items"), dict):
            node = node["items"]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
        node = _resolve(node, schema)
    return _types(node, schema) if isinstance(node, dict) else None


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    ref = node.get("$ref") if isinstance(node, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in parts_of(ref[1:]):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return target


def _types(node: dict[str, Any], root: dict[str, Any]) -> set[str] | None:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {str(k) for k in kind}
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            found: set[str] = set()
            for sub in node[key]:
                found |= _types(_resolve(sub, root), root) or set()
            return found or None
    return None


def parse_edit(text: str, previous: Any, types: set[str] | None = None) -> Any:
    """The value a person typed, as the type the schema asks for (or the field had): an
    emptied field becomes null, "12.50" becomes a number where a number belongs."""
    text = text.strip()
    if text in ("", NULL_TEXT, "null"):
        return None
    if types is None:  # no schema at hand: keep the kind of value the field had
        types = {"string"} if isinstance(previous, str) else {"number", "boolean", "string"}
    if types & {"number", "integer"}:
        compact = text.replace(" ", "")
        if re.fullmatch(r"-?\d+,\d{1,2}", compact):  # 2,50: a decimal comma, not thousands
            compact = compact.replace(",", ".")
        try:
            number = json.loads(compact)
        except ValueError:
            number = None
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return number
    if "boolean" in types and text.lower() in ("true", "false", "yes", "no"):
        return text.lower() in ("true", "yes")
    return text


# --- the field tree ------------------------------------------------------------------------------


class JsonTreeEditor(QTreeWidget):
    """Field | Value; double-click a value to change it. ``data_edited(new_value)`` after each."""

    data_edited = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("jsonTree")
        self.setColumnCount(2)
        self.setHeaderLabels(["Field", "Value"])
        self.setAlternatingRowColors(True)
        self.setUniformRowHeights(True)
        self.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        header = self.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.resizeSection(0, 170)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._on_context_menu)
        self.itemChanged.connect(self._on_item_changed)
        self._data: Any = None
        self._schema: dict[str, Any] | None = None
        self._filling = False
        self._items: dict[str, QTreeWidgetItem] = {}
        self.flags: dict[str, tuple[str, list[str]]] = {}  # pointer -> (severity, messages)

    def set_value(
        self,
        data: Any,
        issues: list[dict[str, Any]] | None = None,
        edited: dict[str, Any] | None = None,
        *,
        schema: dict[str, Any] | None = None,
        read_only: bool = False,
    ) -> None:
        """Show ``data``; ``issues`` are dicts with path/message/severity; ``edited`` maps a
        pointer the user changed to what the model had said there; ``schema`` types the edits."""
        self._filling = True
        self._schema = schema
        self.clear()
        self._items = {}
        self._data = copy.deepcopy(data)
        self._read_only = read_only
        if isinstance(data, (dict, list)):
            self._add_children(self.invisibleRootItem(), data, [])
        elif data is not None:
            self._add(self.invisibleRootItem(), "value", data, [])
        self.expandAll()
        self._highlight(issues or [], edited or {})
        self._filling = False

    def value(self) -> Any:
        return copy.deepcopy(self._data)

    def edit(self, index: Any, trigger: Any = None, event: Any = None) -> Any:
        """Only values are edited: F2 or a double-click on a field's name edits its value."""
        if index.isValid() and index.column() == 0:
            index = self.model().index(index.row(), 1, index.parent())
            self.setCurrentIndex(index)
        if trigger is None:
            return super().edit(index)
        return super().edit(index, trigger, event)

    def item_at(self, path: str) -> QTreeWidgetItem | None:
        return self._items.get(path)

    def _add_children(self, parent: QTreeWidgetItem, data: Any, parts: list[str | int]) -> None:
        entries = data.items() if isinstance(data, dict) else enumerate(data)
        for key, value in entries:
            label = str(key) if isinstance(data, dict) else f"#{int(key) + 1}"
            self._add(parent, label, value, [*parts, key])

    def _add(self, parent: QTreeWidgetItem, label: str, value: Any, parts: list[str | int]) -> None:
        item = QTreeWidgetItem(parent, [label.replace("_", " "), display(value)])
        path = pointer(parts)
        item.setData(0, POINTER, path)
        item.setToolTip(0, path or "/")
        self._items[path] = item
        if isinstance(value, (dict, list)):
            item.setForeground(1, QBrush(QColor("#6b7280")))
            self._add_children(item, value, parts)
            return
        if value is None:
            item.setForeground(1, QBrush(QColor("#9ca3af")))
        if not self._read_only:
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)

    def _highlight(self, issues: list[dict[str, Any]], edited: dict[str, Any]) -> None:
        self.flags = {}
        for path, was in edited.items():
            item = self._items.get(path)
            if item is not None:
                self._paint(item, "edited", [f"Edited by you (the model said {display(was)})"])
        for issue in issues:
            path = str(issue.get("path") or "")
            severity = str(issue.get("severity") or "error")
            item = self._nearest(path)
            if item is None:
                continue
            severity_now, messages = self.flags.get(path, (severity, []))
            if severity == "error":
                severity_now = "error"
            messages.append(str(issue.get("message") or ""))
            self.flags[path] = (severity_now, messages)
        for path, (severity, messages) in self.flags.items():
            item = self._nearest(path)
            assert item is not None
            self._paint(item, severity, messages)
            parent = item.parent()
            while parent is not None:  # a collapsed branch still shows that something is inside
                parent.setForeground(0, QBrush(QColor(COLORS[severity][1])))
                parent = parent.parent()

    def _nearest(self, path: str) -> QTreeWidgetItem | None:
        """The item for ``path``, or its closest shown ancestor (a missing field's parent)."""
        while path and path not in self._items:
            path = path.rsplit("/", 1)[0]
        return self._items.get(path)

    def _paint(self, item: QTreeWidgetItem, kind: str, messages: list[str]) -> None:
        background, foreground = COLORS[kind]
        for column in (0, 1):
            item.setBackground(column, QBrush(QColor(background)))
            item.setForeground(column, QBrush(QColor(foreground)))
            item.setToolTip(column, "\n".join(m for m in messages if m))
        if kind == "error":
            font = QFont(item.font(0))
            font.setBold(True)
            item.setFont(0, font)

    @Slot(QTreeWidgetItem, int)
    def _on_item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if self._filling or column != 1:
            return
        path = str(item.data(0, POINTER))
        previous = get_at(self._data, path) if path else self._data
        value = parse_edit(item.text(1), previous, schema_types(self._schema, path))
        if value == previous and type(value) is type(previous):
            self._filling = True
            item.setText(1, display(previous))
            self._filling = False
            return
        self._data = set_at(self._data, path, value)
        self.data_edited.emit(self.value())

    @Slot(QPoint)
    def _on_context_menu(self, position: QPoint) -> None:
        item = self.itemAt(position)
        if item is None or getattr(self, "_read_only", False):
            return
        path = str(item.data(0, POINTER))
        parent_path = path.rsplit("/", 1)[0] if path else ""
        container = get_at(self._data, parent_path) if path else None
        target = get_at(self._data, path) if path else self._data
        menu = QMenu(self)
        if isinstance(target, list):
            menu.addAction("Add an item", lambda: self._append(path, target))
        if isinstance(container, list):
            menu.addAction("Remove this item", lambda: self._remove(parent_path, path))
        if not isinstance(target, (dict, list)):
            menu.addAction("Set to null", lambda: self._set_null(path))
        if not menu.isEmpty():
            menu.exec(self.viewport().mapToGlobal(position))

    def _append(self, path: str, items: list[Any]) -> None:
        template = _blank(items[-1]) if items else None
        self._data = set_at(self._data, path, [*items, template])
        self.data_edited.emit(self.value())

    def _remove(self, parent_path: str, path: str) -> None:
        items = list(get_at(self._data, parent_path))
        del items[int(parts_of(path)[-1])]
        self._data = set_at(self._data, parent_path, items)
        self.data_edited.emit(self.value())

    def _set_null(self, path: str) -> None:
        self._data = set_at(self._data, path, None)
        self.data_edited.emit(self.value())


def _blank(example: Any) -> Any:
    """A new list item shaped like ``example`` with every value empty."""
    if isinstance(example, dict):
        return {key: _blank(value) for key, value in example.items()}
    if isinstance(example, list):
        return []
    return None


# --- the records table ---------------------------------------------------------------------------


def record_list(data: Any) -> tuple[str, list[str]] | None:
    """Which list of ``data`` holds its records (as the exports do), and the column names."""
    if not isinstance(data, dict):
        return None
    rows = data.get("rows")
    if isinstance(rows, list) and all(isinstance(row, list) for row in rows):
        width = max([len(row) for row in rows] + [len(data.get("header") or [])], default=0)
        header = [str(h) for h in data.get("header") or []]
        return "rows", header + [f"Column {i + 1}" for i in range(len(header), width)]
    for key in ("line_items", "items", "fields"):
        items = data.get(key)
        if isinstance(items, list) and items and all(isinstance(i, dict) for i in items):
            columns: list[str] = []
            for item in items:
                columns += [name for name in item if name not in columns]
            return key, columns
    return None


class RecordsTable(QTableWidget):
    """The record list of a result as a spreadsheet; ``data_edited(new_value)`` after each edit."""

    data_edited = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("recordsTable")
        self.setAlternatingRowColors(True)
        self.horizontalHeader().setStretchLastSection(True)
        self.verticalHeader().setDefaultSectionSize(24)
        self.itemChanged.connect(self._on_item_changed)
        self._data: Any = None
        self._key = ""
        self._columns: list[str] = []
        self._schema: dict[str, Any] | None = None
        self._filling = False

    def set_value(
        self,
        data: Any,
        issues: list[dict[str, Any]] | None = None,
        schema: dict[str, Any] | None = None,
    ) -> bool:
        """Show the records of ``data``; False (and empty) when it has none."""
        self._filling = True
        self._schema = schema
        self.clear()
        found = record_list(data)
        self._data = copy.deepcopy(data)
        if found is None:
            self.setRowCount(0)
            self.setColumnCount(0)
            self._filling = False
            return False
        self._key, self._columns = found
        records = data[self._key]
        self.setColumnCount(len(self._columns))
        self.setRowCount(len(records))
        self.setHorizontalHeaderLabels([c.replace("_", " ") for c in self._columns])
        for row, record in enumerate(records):
            for column, name in enumerate(self._columns):
                value = _cell(record, column, name)
                self.setItem(row, column, QTableWidgetItem(display(value)))
        flagged: dict[tuple[int, int], tuple[str, list[str]]] = {}
        for issue in issues or []:
            cell = self._cell_of(str(issue.get("path") or ""))
            if cell is None:
                continue
            severity, messages = flagged.get(cell, ("warning", []))
            if issue.get("severity", "error") == "error":
                severity = "error"  # an error outranks a warning on the same cell
            flagged[cell] = (severity, [*messages, str(issue.get("message") or "")])
        for (row, column), (severity, messages) in flagged.items():
            item = self.item(row, column)
            if item is not None:
                background, foreground = COLORS[severity]
                item.setBackground(QBrush(QColor(background)))
                item.setForeground(QBrush(QColor(foreground)))
                item.setToolTip("\n".join(messages))
        self.resizeColumnsToContents()
        self._filling = False
        return True

    def _cell_of(self, path: str) -> tuple[int, int] | None:
        parts = parts_of(path)
        if len(parts) < 3 or parts[0] != self._key or not parts[1].isdigit():
            return None
        if self._key == "rows":
            column = int(parts[2]) if parts[2].isdigit() else -1
        else:
            column = self._columns.index(parts[2]) if parts[2] in self._columns else -1
        return (int(parts[1]), column) if column >= 0 else None

    @Slot(QTableWidgetItem)
    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling:
            return
        row, column = item.row(), item.column()
        name: str | int = column if self._key == "rows" else self._columns[column]
        path = pointer([self._key, row, name])
        record = self._data[self._key][row]
        previous = _cell(record, column, self._columns[column])
        if isinstance(record, list) and column >= len(record):
            record.extend([None] * (column + 1 - len(record)))
        value = parse_edit(item.text(), previous, schema_types(self._schema, path))
        self._data = set_at(self._data, path, value)
        self.data_edited.emit(copy.deepcopy(self._data))


def _cell(record: Any, column: int, name: str) -> Any:
    if isinstance(record, list):
        return record[column] if column < len(record) else None
    return record.get(name) if isinstance(record, dict) else None
