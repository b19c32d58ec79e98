"""Scores for extraction results against exact ground truth: field F1, chart relaxed accuracy,
table cell F1. Standard library only, so the numbers do not depend on what else is installed.

- **Field F1**: every non-null leaf of the truth is expected; every non-null leaf of the answer
  is predicted. A predicted leaf is right when its path and value match a truth leaf: numbers
  within max(0.011, 0.5 %) after reading either number format (1,234.56 or 1.234,56); dates
  compared as days whatever their format; other strings compared case-, space- and
  punctuation-insensitively, allowing one edit in ten characters. Lists of objects (line items)
  are paired by the assignment that matches the most leaves (Hungarian method), so order does
  not matter; leaves of unpaired items count as missed or as inventions.
- **Relaxed accuracy** (ChartQA): the share of truth points whose value the answer gives
  within 5 %, series paired by name (or order), points by their x label (or order).
- **Table cell F1**: header and body cells as (row, column, text) triples. A merged cell may be
  given once or repeated over the cells it spans; both are counted alike.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from typing import Any

NUMBER_ABS_TOLERANCE = 0.011
NUMBER_REL_TOLERANCE = 0.005
CHART_TOLERANCE = 0.05
STRING_SIMILARITY = 0.9

# --- normalising ------------------------------------------------------------------------------

_MONTHS = {
    name: index
    for index, names in enumerate(
        [
            ("jan", "january", "januar", "janvier"),
            ("feb", "february", "februar", "fevrier", "février"),
            ("mar", "march", "märz", "maerz", "mars"),
            ("apr", "april", "avril"),
            ("may", "mai"),
            ("jun", "june", "juni", "juin"),
            ("jul", "july", "juli", "juillet"),
            ("aug", "august", "aout", "août"),
            ("sep", "sept", "september", "septembre"),
            ("oct", "october", "oktober", "octobre"),
            ("nov", "november", "novembre"),
            ("dec", "december", "dezember", "decembre", "décembre"),
        ],
        start=1,
    )
    for name in names
}


def normalise_text(value: Any) -> str:
    """Case-folded, accents kept, punctuation and runs of spaces removed."""
    text = unicodedata.normalize("NFKC", str(value)).casefold()
    text = re.sub(r"[^\w%€$£¥]+", " ", text)
    return " ".join(text.split())


def parse_number(value: Any) -> float | None:
    """A number from a number or from text in either format: 1,234.56 · 1.234,56 · 1 234,56 ·
    1'234.56 · (12.00) · 12 % · €12.50. None if it is not one number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = unicodedata.normalize("NFKC", str(value)).strip()
    negative = text.startswith("(") and text.endswith(")") or text.startswith(("-", "−"))
    text = re.sub(r"[^\d.,'\s]", "", text).replace("'", "").replace(" ", "").replace("\u202f", "")
    if not text or not any(ch.isdigit() for ch in text):
        return None
    if "," in text and "." in text:  # the last separator is the decimal one
        decimal = "," if text.rfind(",") > text.rfind(".") else "."
        thousands = "." if decimal == "," else ","
        text = text.replace(thousands, "").replace(decimal, ".")
    elif "," in text:
        tail = text.rpartition(",")[2]
        # 1,234 and 1,234,567 group thousands; 12,50 and 0,5 are decimal commas
        thousands = text.count(",") > 1 or len(tail) == 3
        text = text.replace(",", "") if thousands else text.replace(",", ".")
    elif text.count(".") > 1:
        text = text.replace(".", "")
    try:
        number = float(text)
    except ValueError:
        return None
    return -number if negative else number


def parse_date(value: Any) -> set[dt.date]:
    """Every day a date string can mean (03/05/2024 is both 3 May and 5 March)."""
    if not isinstance(value, str):
        return set()
    text = value.strip().casefold().replace(",", " ")
    found: set[dt.date] = set()
    match = re.fullmatch(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})", text)
    if match:
        found |= _day(int(match[1]), int(match[2]), int(match[3]))
    match = re.fullmatch(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{2,4})", text)
    if match:
        year = _year(int(match[3]))
        found |= _day(year, int(match[2]), int(match[1])) | _day(year, int(match[1]), int(match[2]))
    words = text.replace(".", " ").split()
    if len(words) == 3:
        day, month, year = _word_date(words)
        if day and month and year:
            found |= _day(_year(year), month, day)
    return found


def _word_date(words: list[str]) -> tuple[int, int, int]:
    """5 March 2024 · March 5 2024 · 5 Mar 24."""
    month = next((_MONTHS[w] for w in words if w in _MONTHS), 0)
    numbers = [int(w.rstrip("stndrh")) for w in words if w.rstrip("stndrh").isdigit()]
    if month and len(numbers) == 2:
        day, year = (numbers[0], numbers[1]) if numbers[0] <= 31 else (numbers[1], numbers[0])
        return day, month, year
    return 0, 0, 0


def _year(year: int) -> int:
    return year + 2000 if year < 100 else year


def _day(year: int, month: int, day: int) -> set[dt.date]:
    try:
        return {dt.date(year, month, day)}
    except ValueError:
        return set()


def similarity(a: str, b: str) -> float:
    """1 − normalised Levenshtein distance (the core of ANLS)."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1.0 - previous[-1] / max(len(a), len(b))


def values_match(predicted: Any, expected: Any) -> bool:
    """One leaf: numbers with tolerance, dates as days, strings loosely (see the module doc)."""
    if expected is None:
        return predicted is None
    if predicted is None:
        return False
    if isinstance(expected, bool) or isinstance(predicted, bool):
        return str(predicted).casefold() == str(expected).casefold()
    if isinstance(expected, (int, float)):
        number = parse_number(predicted)
        return number is not None and numbers_close(number, float(expected))
    dates = parse_date(expected)
    if dates:
        return bool(dates & parse_date(predicted))
    expected_text, predicted_text = normalise_text(expected), normalise_text(predicted)
    if expected_text == predicted_text:
        return True
    number = parse_number(expected)
    if number is not None and re.fullmatch(r"[\d.,'\s%€$£¥-]+", str(expected).strip()):
        other = parse_number(predicted)
        return other is not None and numbers_close(other, number)
    return similarity(expected_text, predicted_text) >= STRING_SIMILARITY


def numbers_close(a: float, b: float) -> bool:
    return abs(a - b) <= max(NUMBER_ABS_TOLERANCE, NUMBER_REL_TOLERANCE * abs(b))


# --- field F1 ---------------------------------------------------------------------------------


def leaves(data: Any) -> int:
    """How many non-null leaves ``data`` has."""
    if isinstance(data, dict):
        return sum(leaves(value) for value in data.values())
    if isinstance(data, list):
        return sum(leaves(value) for value in data)
    return 0 if data is None else 1


def matched(predicted: Any, expected: Any) -> int:
    """How many leaves of ``expected`` the answer gets right, at the same place."""
    if isinstance(expected, dict):
        if not isinstance(predicted, dict):
            return 0
        return sum(matched(predicted.get(key), value) for key, value in expected.items())
    if isinstance(expected, list):
        if not isinstance(predicted, list):
            return 0
        if all(not isinstance(item, (dict, list)) for item in expected):
            return _matched_scalars(predicted, expected)
        return sum(score for _, _, score in pair_items(predicted, expected))
    if expected is None or isinstance(predicted, (dict, list)):
        return 0
    return int(values_match(predicted, expected))


def _matched_scalars(predicted: list[Any], expected: list[Any]) -> int:
    """Lists of plain values (tags, a table row): matched as multisets."""
    left = [p for p in predicted if p is not None]
    count = 0
    for value in expected:
        if value is None:
            continue
        for index, candidate in enumerate(left):
            if values_match(candidate, value):
                count += 1
                del left[index]
                break
    return count


def pair_items(predicted: list[Any], expected: list[Any]) -> list[tuple[int, int, int]]:
    """The pairing of predicted and expected items with the most matched leaves."""
    if not predicted or not expected:
        return []
    scores = [[matched(p, e) for e in expected] for p in predicted]
    best = max(max(row) for row in scores)
    costs = [[best - score for score in row] for row in scores]
    return [(i, j, scores[i][j]) for i, j in hungarian(costs) if scores[i][j] > 0]


def field_f1(predicted: Any, expected: Any) -> dict[str, float]:
    """Precision, recall and F1 over the non-null leaves (see the module doc)."""
    right = matched(predicted, expected)
    predicted_count, expected_count = leaves(predicted), leaves(expected)
    precision = right / predicted_count if predicted_count else (1.0 if not expected_count else 0.0)
    recall = right / expected_count if expected_count else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "matched": right,
        "predicted": predicted_count,
        "expected": expected_count,
    }


def hungarian(costs: list[list[float]]) -> list[tuple[int, int]]:
    """Minimum-cost assignment of rows to columns (rectangular allowed), O(n³)."""
    rows, columns = len(costs), len(costs[0]) if costs else 0
    transposed = rows > columns
    if transposed:
        costs = [list(column) for column in zip(*costs, strict=True)]
        rows, columns = columns, rows
    inf = float("inf")
    u, v = [0.0] * (rows + 1), [0.0] * (columns + 1)
    match, way = [0] * (columns + 1), [0] * (columns + 1)
    for row in range(1, rows + 1):
        match[0], column = row, 0
        least, used = [inf] * (columns + 1), [False] * (columns + 1)
        while True:
            used[column] = True
            current, delta, next_column = match[column], inf, 0
            for j in range(1, columns + 1):
                if not used[j]:
                    cost = costs[current - 1][j - 1] - u[current] - v[j]
                    if cost < least[j]:
                        least[j], way[j] = cost, column
                    if least[j] < delta:
                        delta, next_column = least[j], j
            for j in range(columns + 1):
                if used[j]:
                    u[match[j]] += delta
                    v[j] -= delta
                else:
                    least[j] -= delta
            column = next_column
            if match[column] == 0:
                break
        while column:
            previous = way[column]
            match[column] = match[previous]
            column = previous
    pairs = [(match[j] - 1, j - 1) for j in range(1, columns + 1) if match[j]]
    return sorted((j, i) if transposed else (i, j) for i, j in pairs)


# --- charts -----------------------------------------------------------------------------------


def relaxed_accuracy(
    predicted: Any, expected: dict[str, Any], tolerance: float = CHART_TOLERANCE
) -> dict[str, float]:
    """The share of the truth's points given within ``tolerance`` (relative)."""
    truth_series = expected.get("series") or []
    total = sum(len(series.get("points") or []) for series in truth_series)
    answer_series = (predicted or {}).get("series") if isinstance(predicted, dict) else None
    answer_series = [s for s in answer_series or [] if isinstance(s, dict)]
    correct = 0
    for index, series in enumerate(truth_series):
        candidate = _same_series(answer_series, series, index)
        if candidate is None:
            continue
        points = [p for p in candidate.get("points") or [] if isinstance(p, dict)]
        for position, point in enumerate(series.get("points") or []):
            found = _same_point(points, point, position)
            value = parse_number(found.get("y")) if found else None
            if value is not None and _within(value, float(point["y"]), tolerance):
                correct += 1
    return {"accuracy": correct / total if total else 1.0, "correct": correct, "total": total}


def _same_series(candidates: list[dict[str, Any]], series: dict[str, Any], index: int) -> Any:
    name = normalise_text(series.get("name") or "")
    for candidate in candidates:
        if name and normalise_text(candidate.get("name") or "") == name:
            return candidate
    return candidates[index] if index < len(candidates) else None


def _same_point(points: list[dict[str, Any]], point: dict[str, Any], position: int) -> Any:
    x = point.get("x")
    for candidate in points:
        if x is not None and values_match(candidate.get("x"), x):
            return candidate
    return points[position] if position < len(points) and x is None else None


def _within(value: float, truth: float, tolerance: float) -> bool:
    if truth == 0:
        return abs(value) <= tolerance
    return abs(value - truth) <= tolerance * abs(truth)


# --- tables -----------------------------------------------------------------------------------


def table_cells(
    table: Any, spans: list[dict[str, int]] | None = None
) -> list[tuple[int, int, str]]:
    """(row, column, text) of the header (row 0) and body cells, merged cells spread over
    the cells they cover, empty cells left out."""
    if not isinstance(table, dict):
        return []
    grid: list[list[Any]] = [list(table.get("header") or [])]
    grid += [list(row) if isinstance(row, list) else [] for row in table.get("rows") or []]
    for span in spans or []:
        anchor_row, anchor_column = span["row"], span["column"]
        if anchor_row >= len(grid) or anchor_column >= len(grid[anchor_row]):
            continue
        value = grid[anchor_row][anchor_column]
        for r in range(anchor_row, min(len(grid), anchor_row + span.get("rows", 1))):
            for c in range(anchor_column, anchor_column + span.get("columns", 1)):
                while len(grid[r]) <= c:
                    grid[r].append(None)
                if grid[r][c] in (None, ""):
                    grid[r][c] = value
    return [
        (r, c, normalise_text(value))
        for r, row in enumerate(grid)
        for c, value in enumerate(row)
        if value not in (None, "") and normalise_text(value)
    ]


def table_cell_f1(
    predicted: Any, expected: Any, spans: list[dict[str, int]] | None = None
) -> dict[str, float]:
    """Cells right at their place over cells predicted and expected (spans spread on both)."""
    truth = table_cells(expected, spans)
    answer = table_cells(predicted, spans)
    truth_at = {(r, c): text for r, c, text in truth}
    right = sum(
        1
        for r, c, text in answer
        if (r, c) in truth_at
        and (text == truth_at[(r, c)] or similarity(text, truth_at[(r, c)]) >= STRING_SIMILARITY)
    )
    precision = right / len(answer) if answer else (1.0 if not truth else 0.0)
    recall = right / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "cells": len(truth)}
