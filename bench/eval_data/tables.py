"""Ruled tables with merged cells, drawn with fpdf2: a first column whose groups span several
rows, and a note cell spanning several columns."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from bench.eval_data.documents import _pdf, number

REGIONS = ("North", "South", "East", "West")
PRODUCTS = ("Widgets", "Gadgets", "Sprockets", "Cogs")
MEASURES = (("Units", 0), ("Revenue", 2), ("Returns", 0), ("Margin %", 1))


def make_table(rng: random.Random, stem: Path, index: int) -> tuple[Path, dict[str, Any], dict]:
    measures = rng.sample(MEASURES, rng.choice((2, 3)))
    header = ["Region", "Product", *[name for name, _ in measures]]
    rows: list[list[Any]] = []
    spans: list[dict[str, int]] = []  # grid coordinates: the header is row 0
    for region in rng.sample(REGIONS, rng.choice((2, 3))):
        products = rng.sample(PRODUCTS, rng.choice((1, 2, 3)))
        if len(products) > 1:
            spans.append({"row": len(rows) + 1, "column": 0, "rows": len(products), "columns": 1})
        for position, product in enumerate(products):
            cells = [region if position == 0 else None, product]
            for name, decimals in measures:
                value = rng.uniform(0, 100 if "%" in name else 5000)
                cells.append(number(value, "en", decimals))
            rows.append(cells)
    if rng.random() < 0.7:  # a row whose figures are one merged note
        target = rng.randrange(len(rows))
        rows[target][2:] = ["not reported", *[None] * (len(measures) - 1)]
        if len(measures) > 1:
            spans.append({"row": target + 1, "column": 2, "rows": 1, "columns": len(measures)})
    title = f"Sales by region, {2020 + index % 5}"
    path = _draw(stem, title, header, rows, spans)
    truth = {"title": title, "header": header, "rows": rows}
    return path, truth, {"spans": spans, "rows": len(rows), "columns": len(header)}


def _draw(
    stem: Path, title: str, header: list[str], rows: list[list[Any]], spans: list[dict[str, int]]
) -> Path:
    widths = [90.0, 100.0] + [95.0] * (len(header) - 2)
    height = 22.0
    left, top = 40.0, 90.0
    pdf = _pdf((max(420.0, left * 2 + sum(widths)), top + height * (len(rows) + 2) + 40))
    pdf.set_font("Helvetica", "B", 13)
    pdf.text(left, 60, title)
    grid = [header, *rows]
    covered = set()
    extent = {}
    for span in spans:
        extent[(span["row"], span["column"])] = (span["rows"], span["columns"])
        for r in range(span["row"], span["row"] + span["rows"]):
            for c in range(span["column"], span["column"] + span["columns"]):
                if (r, c) != (span["row"], span["column"]):
                    covered.add((r, c))
    for r, cells in enumerate(grid):
        pdf.set_font("Helvetica", "B" if r == 0 else "", 10)
        if r == 0:
            pdf.set_fill_color(235, 238, 244)
            pdf.rect(left, top, sum(widths), height, style="F")
        for c, value in enumerate(cells):
            if (r, c) in covered:
                continue
            rows_spanned, columns_spanned = extent.get((r, c), (1, 1))
            x = left + sum(widths[:c])
            y = top + r * height
            w = sum(widths[c : c + columns_spanned])
            h = height * rows_spanned
            pdf.rect(x, y, w, h)
            if value is not None:
                pdf.text(x + 6, y + h / 2 + 3.5, str(value))
    path = stem.with_suffix(".pdf")
    pdf.output(str(path))
    return path
