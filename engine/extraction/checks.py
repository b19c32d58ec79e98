"""Checks of extracted values beyond the schema: arithmetic, chart shares, the PDF's own text.

Each check looks for the fields it knows by name (``line_items``/``items``, ``subtotal``,
``tax``, ``total``; ``chart_type`` and ``series``), so user schemas that use those names are
checked too. A failed check becomes an ``Issue`` on the field it concerns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from engine.protocol.extract import Issue

_ITEM_LISTS = ("line_items", "items")
_ADDED = ("tip", "shipping", "service_charge")
_SUBTRACTED = ("discount",)


def run_checks(data: Any, text_layer: str | None = None) -> list[Issue]:
    """Every check that applies to ``data``; the text check only when there is a text layer."""
    issues: list[Issue] = []
    if isinstance(data, dict):
        issues += arithmetic(data)
        issues += chart_shares(data)
        issues += axis_range(data)
    if text_layer and len("".join(text_layer.split())) >= 20:
        issues += numbers_in_text(data, text_layer)
    return issues


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def close(a: float, b: float) -> bool:
    """Equal to the cent, with room for rounding on large amounts."""
    return abs(a - b) <= max(0.011, 0.001 * max(abs(a), abs(b)))


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


# ---------------------------------------------------------------------------------------------
# Invoices and receipts
# ---------------------------------------------------------------------------------------------


def arithmetic(data: dict[str, Any]) -> list[Issue]:
    """Quantity × unit price = amount; Σ amounts = subtotal; subtotal + tax (+ tip …) = total."""
    issues: list[Issue] = []
    key = next((k for k in _ITEM_LISTS if isinstance(data.get(k), list)), None)
    items = [item for item in data.get(key, []) if isinstance(item, dict)] if key else []
    for index, item in enumerate(items):
        quantity = _number(item.get("quantity"))
        price = _number(item.get("unit_price", item.get("price")))
        amount = _number(item.get("amount"))
        if None not in (quantity, price, amount):
            assert quantity is not None and price is not None and amount is not None
            if not close(quantity * price, amount):
                issues.append(
                    Issue(
                        f"/{key}/{index}/amount",
                        "arithmetic",
                        f"{_fmt(quantity)} × {_fmt(price)} = {_fmt(quantity * price)}, "
                        f"but the amount is {_fmt(amount)}.",
                    )
                )
    subtotal, tax, total = (_number(data.get(k)) for k in ("subtotal", "tax", "total"))
    added = sum(_number(data.get(k)) or 0.0 for k in _ADDED)
    added -= sum(_number(data.get(k)) or 0.0 for k in _SUBTRACTED)
    amounts = [_number(item.get("amount")) for item in items]
    if items and all(a is not None for a in amounts):
        items_sum = sum(a for a in amounts if a is not None)
        if subtotal is not None and not close(items_sum, subtotal):
            issues.append(
                Issue(
                    "/subtotal",
                    "arithmetic",
                    f"The {key.replace('_', ' ') if key else 'items'} add up to {_fmt(items_sum)}, "
                    f"but the subtotal is {_fmt(subtotal)}.",
                )
            )
        elif subtotal is None and total is not None:
            # Without a subtotal the items are either net (tax added) or gross (tax included).
            candidates = [items_sum + added, items_sum + (tax or 0.0) + added]
            if not any(close(c, total) for c in candidates):
                issues.append(
                    Issue(
                        "/total",
                        "arithmetic",
                        f"The items add up to {_fmt(items_sum)}, which does not explain the "
                        f"total of {_fmt(total)}.",
                    )
                )
    if subtotal is not None and total is not None:
        # Net prices plus tax, or gross prices with the tax only stated ("incl. VAT").
        candidates = [subtotal + (tax or 0.0) + added, subtotal + added]
        if not any(close(c, total) for c in candidates):
            issues.append(
                Issue(
                    "/total",
                    "arithmetic",
                    f"Subtotal {_fmt(subtotal)}"
                    + (f" + tax {_fmt(tax)}" if tax is not None else "")
                    + f" = {_fmt(candidates[0])}, but the total is {_fmt(total)}.",
                )
            )
    return issues


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------


def _series(data: dict[str, Any]) -> list[tuple[int, list[Any]]]:
    series = data.get("series")
    if not isinstance(series, list):
        return []
    found = []
    for index, entry in enumerate(series):
        if isinstance(entry, dict) and isinstance(entry.get("points"), list):
            found.append((index, entry["points"]))
    return found


def chart_shares(data: dict[str, Any]) -> list[Issue]:
    """The slices of a pie chart add up to 100 % (or to 1 when given as fractions)."""
    if str(data.get("chart_type", data.get("type", ""))).lower() != "pie":
        return []
    issues = []
    for index, points in _series(data):
        values = [_number(p.get("y")) for p in points if isinstance(p, dict)]
        shares = [v for v in values if v is not None]
        if not shares:
            continue
        total = sum(shares)
        if abs(total - 100.0) > 2.0 and abs(total - 1.0) > 0.02:
            issues.append(
                Issue(
                    f"/series/{index}",
                    "shares",
                    f"The pie's shares add up to {_fmt(total)} %, not 100 %.",
                )
            )
    return issues


def axis_range(data: dict[str, Any]) -> list[Issue]:
    """Values lie inside the value axis' printed range (with a small margin)."""
    axis = data.get("y_axis")
    if not isinstance(axis, dict):
        return []
    low, high = _number(axis.get("min")), _number(axis.get("max"))
    if low is None or high is None or high <= low:
        return []
    margin = 0.05 * (high - low)
    issues = []
    for index, points in _series(data):
        for position, point in enumerate(points):
            value = _number(point.get("y")) if isinstance(point, dict) else None
            if value is not None and not low - margin <= value <= high + margin:
                issues.append(
                    Issue(
                        f"/series/{index}/points/{position}/y",
                        "axis_range",
                        f"{_fmt(value)} lies outside the axis range {_fmt(low)}–{_fmt(high)}.",
                        "warning",
                    )
                )
    return issues


# ---------------------------------------------------------------------------------------------
# The text layer
# ---------------------------------------------------------------------------------------------

_NUMBER_TOKEN = re.compile(r"\d[\d.,'\u00a0\u202f]*")


def text_numbers(text: str) -> set[float]:
    """Every number the text may contain, read both as 1,234.56 and as 1.234,56."""
    found: set[float] = set()
    for token in _NUMBER_TOKEN.findall(text):
        token = token.rstrip(".,'\u00a0\u202f")
        plain = token.replace("'", "").replace("\u00a0", "").replace("\u202f", "")
        for candidate in (plain.replace(",", ""), plain.replace(".", "").replace(",", ".")):
            try:
                found.add(abs(float(candidate)))
            except ValueError:
                pass
        for part in re.findall(r"\d+", token):  # dates, codes: each group of digits alone
            found.add(float(part))
    return found


def numeric_leaves(data: Any, pointer: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from numeric_leaves(value, f"{pointer}/{key}")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from numeric_leaves(value, f"{pointer}/{index}")
    else:
        number = _number(data)
        if number is not None:
            yield pointer, number


def numbers_in_text(data: Any, text: str) -> list[Issue]:
    """Every number in the answer appears in the page's text layer (zeros excepted)."""
    known = sorted(text_numbers(text))
    issues = []
    for pointer, value in numeric_leaves(data):
        if value == 0:
            continue
        if not any(abs(abs(value) - number) <= 0.005 for number in known):
            issues.append(
                Issue(
                    pointer,
                    "text_layer",
                    f"{_fmt(value)} does not appear in the page's text.",
                    "warning",
                )
            )
    return issues
