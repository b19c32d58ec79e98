"""Deterministic merge of page results into one document result.

Pages are merged in page order. A single value (a number, a name, a list of column headers) is
taken from the first page that has it; a later page that disagrees is reported, not silently
dropped. Lists of records (line items, table rows, chart series, form fields) are concatenated,
and a table header repeated at the top of a later page is not counted as a row.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from engine.protocol.extract import Issue


def merge_pages(pages: list[tuple[int, Any]]) -> tuple[Any, list[Issue]]:
    """Merge (page number, data) pairs; returns the merged data and any conflicts found."""
    ordered = sorted(pages, key=lambda pair: pair[0])
    if not ordered:
        return None, []
    merged = copy.deepcopy(ordered[0][1])  # the pages' own data stays as it was
    issues: list[Issue] = []
    for number, data in ordered[1:]:
        merged = _merge(merged, data, "", number, issues)
    if isinstance(merged, dict) and isinstance(merged.get("rows"), list):
        header = merged.get("header")
        if isinstance(header, list) and header:  # a header repeated on each page is not a row
            merged["rows"] = [row for row in merged["rows"] if row != header]
    return merged, issues


def _is_record_list(value: Any) -> bool:
    """Lists whose items are objects or lists are collections; lists of scalars are values."""
    return isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _merge(current: Any, incoming: Any, pointer: str, page: int, issues: list[Issue]) -> Any:
    if _empty(current):
        return incoming
    if _empty(incoming):
        return current
    if isinstance(current, dict) and isinstance(incoming, dict):
        result = dict(current)
        for key, value in incoming.items():
            result[key] = _merge(current.get(key), value, f"{pointer}/{key}", page, issues)
        return result
    if _is_record_list(current) and _is_record_list(incoming):
        return list(current) + list(incoming)
    if current != incoming:
        issues.append(
            Issue(
                pointer,
                "merge",
                f"Page {page} says {_short(incoming)}; kept {_short(current)} from an earlier page.",
                "warning",
            )
        )
    return current


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "…"
