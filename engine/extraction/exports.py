"""Extraction results as JSON, JSON Lines, CSV or Markdown (standard library only).

Input is a list of document results as plain dicts (``DocumentResult`` in the protocol). JSON
and JSON Lines keep everything, provenance included. CSV holds the tabular part of each
document (table rows, line items, chart series, form fields, otherwise every field as a
field/value row) with a ``file`` column first. Markdown is a readable report per document. Both
name a file by its path below the folder that all the files share.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

FORMATS = ("json", "jsonl", "csv", "md")
# A spreadsheet runs a cell that starts with one of these as a formula; such text is quoted.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export(documents: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        body = documents[0] if len(documents) == 1 else documents
        return json.dumps(body, ensure_ascii=False, indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in documents)
    if fmt == "csv":
        return to_csv(documents)
    if fmt == "md":
        return to_markdown(documents)
    raise ValueError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")


def write_export(documents: list[dict[str, Any]], fmt: str, path: Path) -> int:
    """Write atomically (a partial file never replaces a good one); returns the bytes written."""
    data = export(documents, fmt).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_bytes(data)
    temporary.replace(path)
    return len(data)


# ---------------------------------------------------------------------------------------------
# Tabular view
# ---------------------------------------------------------------------------------------------


def record_key(data: Any) -> str | None:
    """Which list of an object holds its rows: a table's rows, line items, series, fields."""
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("rows"), list):
        return "rows"
    for key in ("line_items", "items", "fields"):
        if isinstance(data.get(key), list) and all(isinstance(i, dict) for i in data[key]):
            return key
    return "series" if isinstance(data.get("series"), list) else None


def records(data: Any) -> tuple[list[str], list[list[Any]]]:
    """The tabular part of one document's data: (columns, rows)."""
    if isinstance(data, dict):
        key = record_key(data)
        if key == "rows":
            return _table(data)
        if key == "series":
            return _series(data["series"])
        if key is not None:
            return _objects(data[key])
        return ["field", "value"], [[pointer, value] for pointer, value in leaves(data)]
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return _objects(data)
    return ["value"], [[data]]


def _table(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rows = [row if isinstance(row, list) else [row] for row in data["rows"]]
    header = [str(h) for h in data.get("header") or []]
    width = max([len(header), *(len(row) for row in rows)], default=0)
    header += [f"column {i + 1}" for i in range(len(header), width)]
    return header, [row + [None] * (width - len(row)) for row in rows]


def _objects(items: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    columns: list[str] = []
    for item in items:
        columns += [key for key in item if key not in columns]
    return columns, [[item.get(column) for column in columns] for item in items]


def _series(series: list[Any]) -> tuple[list[str], list[list[Any]]]:
    rows = []
    for index, entry in enumerate(series):
        if not isinstance(entry, dict):
            continue
        name = entry.get("name") or f"series {index + 1}"
        for point in entry.get("points") or []:
            if isinstance(point, dict):
                rows.append([name, point.get("x"), point.get("y")])
    return ["series", "x", "y"], rows


def leaves(data: Any, pointer: str = "") -> list[tuple[str, Any]]:
    """Every scalar with its JSON-pointer path."""
    if isinstance(data, dict):
        return [leaf for k, v in data.items() for leaf in leaves(v, f"{pointer}/{k}")]
    if isinstance(data, list):
        return [leaf for i, v in enumerate(data) for leaf in leaves(v, f"{pointer}/{i}")]
    return [(pointer or "/", data)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def file_labels(documents: list[dict[str, Any]]) -> list[str]:
    """Each document's file as its path below the folder all the files share: just the name
    when they share one folder, and ``january/scan.jpg`` beside ``february/scan.jpg``."""
    paths = [Path(str(document.get("file", ""))) for document in documents]
    if not paths:
        return []
    try:
        shared = os.path.commonpath([path.parent for path in paths])
    except ValueError:  # relative and absolute paths mixed: they share nothing
        return [str(path) for path in paths]
    return [str(path.relative_to(shared)) for path in paths]


def _column_keys(names: list[str]) -> list[tuple[str, int]]:
    """Each column as its name and how many columns of that name came before it, so a header
    that repeats a name (or leaves several cells blank) keeps every one of its columns."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        keys.append((name, seen.get(name, 0)))
        seen[name] = seen.get(name, 0) + 1
    return keys


def to_csv(documents: list[dict[str, Any]]) -> str:
    columns: list[tuple[str, int]] = []
    blocks = []
    for document, label in zip(documents, file_labels(documents), strict=True):
        if document.get("data") is None:
            continue  # a failed file has no rows; the summary and JSON say why
        names, rows = records(document["data"])
        keys = _column_keys(names)
        columns += [key for key in keys if key not in columns]
        blocks.append((label, keys, rows))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", *(_cell(name) for name, _ in columns)])  # names come from documents
    for label, keys, rows in blocks:
        for row in rows:
            values = dict(zip(keys, row, strict=False))
            writer.writerow([_cell(label), *(_cell(values.get(column)) for column in columns)])
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _md(value: Any) -> str:
    text = _cell(value) if not isinstance(value, str) else value
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _md_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md(c) for c in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
    return lines


def to_markdown(documents: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for document, label in zip(documents, file_labels(documents), strict=True):
        parts += _document_markdown(document, label)
    return "\n".join(parts).rstrip() + "\n"


def _document_markdown(document: dict[str, Any], name: str) -> list[str]:
    pages = [page for page in document.get("pages") or [] if isinstance(page, dict)]
    lines = [f"# {name}", ""]
    lines.append(_summary_line(document, pages))
    lines.append("")
    data = document.get("data")
    if data is None:
        errors = [page.get("error") for page in pages if page.get("error")]
        lines += ["No data was extracted.", *(f"- {error}" for error in errors), ""]
        return lines
    columns, rows = records(data)
    scalars = [
        (pointer, value)
        for pointer, value in leaves(data)
        if not _inside_records(pointer, data) and columns != ["field", "value"]
    ]
    if scalars:
        lines += ["## Fields", "", *_md_table(["field", "value"], [list(s) for s in scalars]), ""]
    title = "Values" if columns == ["field", "value"] else "Rows"
    lines += [f"## {title}", "", *_md_table(columns, rows), ""]
    issues = list(document.get("issues") or [])
    for page in pages:
        issues += [{**issue, "page": page.get("page")} for issue in page.get("issues") or []]
    if issues:
        lines += ["## Issues", ""]
        for issue in issues:
            where = f"page {issue['page']}, " if issue.get("page") else ""
            field = issue.get("path") or "page"
            lines.append(
                f"- {where}`{field}` ({issue.get('check')}, {issue.get('severity')}): "
                f"{_md(issue.get('message'))}"
            )
        lines.append("")
    return lines


def _summary_line(document: dict[str, Any], pages: list[dict[str, Any]]) -> str:
    numbers = [page.get("page") for page in pages]
    provenance = next((p["provenance"] for p in pages if p.get("provenance")), None)
    bits = [
        f"schema {document.get('schema_name')} ({document.get('schema_version')})",
        f"status {document.get('status')}",
        f"pages {', '.join(str(n) for n in numbers)}" if numbers else "no pages",
    ]
    if provenance:
        bits.append(
            f"{provenance.get('backend')} model {provenance.get('model')} "
            f"({provenance.get('quant')}, {provenance.get('device')})"
        )
    bits.append(f"SHA-256 {str(document.get('sha256', ''))[:12]}…")
    return " · ".join(bits)


def _inside_records(pointer: str, data: Any) -> bool:
    """Whether a leaf belongs to the rows shown in the table below the fields."""
    key = record_key(data)
    if key is None:
        return not isinstance(data, dict)
    head = pointer.split("/")[1] if pointer.count("/") >= 1 else ""
    return head == key or (key == "rows" and head == "header")
