"""Exports (JSON, JSON Lines, CSV, Markdown) and the chart re-plot."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from engine.extraction import exports
from engine.extraction.replot import has_series, render_replot

TABLE = {
    "file": "/scans/parts.pdf",
    "sha256": "ab" * 32,
    "schema_name": "table",
    "schema_version": "v1",
    "status": "ok",
    "data": {"title": "Parts", "header": ["name", "qty"], "rows": [["bolt", "10"], ["nut", None]]},
    "pages": [
        {
            "page": 1,
            "status": "ok",
            "issues": [
                {
                    "path": "/rows/0/1",
                    "check": "text_layer",
                    "message": "10 | not seen",
                    "severity": "warning",
                }
            ],
            "provenance": {"backend": "local", "model": "tiny", "quant": "nf4", "device": "cpu"},
        }
    ],
    "issues": [],
}
INVOICE = {
    "file": "/scans/invoice.png",
    "status": "ok",
    "data": {
        "invoice_number": '=HYPERLINK("http://x")',
        "total": 34.51,
        "line_items": [
            {"description": "Widget", "quantity": 2, "unit_price": 12.5, "amount": 25.0},
            {"description": "Bolt", "quantity": 10, "unit_price": 0.4, "amount": 4.0},
        ],
    },
    "pages": [],
}
CHART = {
    "file": "/scans/chart.png",
    "status": "ok",
    "data": {
        "chart_type": "bar",
        "title": "Sales",
        "x_axis": {"label": "Quarter", "unit": None},
        "y_axis": {"label": "Revenue", "unit": "kEUR", "min": 0, "max": 300},
        "series": [
            {"name": "2023", "points": [{"x": "Q1", "y": 120}, {"x": "Q2", "y": 200}]},
            {"name": "2024", "points": [{"x": "Q1", "y": 80}, {"x": "Q2", "y": 260}]},
        ],
    },
}
FAILED = {
    "file": "/scans/blank.pdf",
    "status": "failed",
    "data": None,
    "pages": [{"page": 1, "status": "failed", "error": "The answer was not valid JSON."}],
}


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_json_is_the_document_itself_for_one_file_and_a_list_for_several() -> None:
    assert json.loads(exports.export([TABLE], "json")) == TABLE
    assert json.loads(exports.export([TABLE, CHART], "json")) == [TABLE, CHART]


def test_json_lines_hold_one_document_per_line() -> None:
    lines = exports.export([TABLE, FAILED, CHART], "jsonl").splitlines()
    assert [json.loads(line)["file"] for line in lines] == [
        d["file"] for d in (TABLE, FAILED, CHART)
    ]


def test_csv_of_a_table_uses_its_header_and_rows() -> None:
    assert read_csv(exports.export([TABLE], "csv")) == [
        ["file", "name", "qty"],
        ["parts.pdf", "bolt", "10"],
        ["parts.pdf", "nut", ""],
    ]


def test_csv_of_an_invoice_is_its_line_items_and_formulas_are_defused() -> None:
    rows = read_csv(exports.export([INVOICE], "csv"))
    assert rows[0] == ["file", "description", "quantity", "unit_price", "amount"]
    assert rows[1] == ["invoice.png", "Widget", "2", "12.5", "25.0"]
    cell = exports._cell('=HYPERLINK("http://x")')
    assert cell.startswith("'=")  # a spreadsheet shows it as text instead of running it
    assert exports._cell(-3.5) == "-3.5"  # numbers are never quoted


def test_csv_of_a_chart_is_one_row_per_point() -> None:
    rows = read_csv(exports.export([CHART], "csv"))
    assert rows == [
        ["file", "series", "x", "y"],
        ["chart.png", "2023", "Q1", "120"],
        ["chart.png", "2023", "Q2", "200"],
        ["chart.png", "2024", "Q1", "80"],
        ["chart.png", "2024", "Q2", "260"],
    ]


def test_csv_of_several_files_unions_the_columns_and_skips_failed_files() -> None:
    rows = read_csv(exports.export([TABLE, FAILED, CHART], "csv"))
    assert rows[0] == ["file", "name", "qty", "series", "x", "y"]
    assert [row[0] for row in rows[1:]] == ["parts.pdf"] * 2 + ["chart.png"] * 4
    assert rows[3] == ["chart.png", "", "", "2023", "Q1", "120"]


def test_csv_keeps_every_column_of_a_header_that_repeats_a_name_or_leaves_cells_blank() -> None:
    repeated = {
        "file": "/scans/a.jpg",
        "data": {"header": ["Qty", "Qty", "", ""], "rows": [["1", "2", "3", "4"]]},
    }
    other = {"file": "/scans/b.jpg", "data": {"header": ["Qty", "Note"], "rows": [["5", "x"]]}}
    assert read_csv(exports.export([repeated, other], "csv")) == [
        ["file", "Qty", "Qty", "", "", "Note"],
        ["a.jpg", "1", "2", "3", "4", ""],
        ["b.jpg", "5", "", "", "", "x"],
    ]


def test_csv_defuses_formulas_in_column_names_and_file_names_too() -> None:
    document = {
        "file": "/scans/=cmd.jpg",
        "data": {
            "header": ['=HYPERLINK("http://evil.example","click")', "note"],
            "rows": [["=1+1", "fine"]],
        },
    }
    assert read_csv(exports.export([document], "csv")) == [
        ["file", '\'=HYPERLINK("http://evil.example","click")', "note"],
        ["'=cmd.jpg", "'=1+1", "fine"],
    ]


def test_files_of_the_same_name_in_different_folders_are_told_apart() -> None:
    data = {"header": ["n"], "rows": [["1"]]}
    documents = [
        {"file": f"/in/{name}", "data": data}
        for name in ("january/scan.jpg", "february/scan.jpg", "february/scan.png")
    ]
    rows = read_csv(exports.export(documents, "csv"))
    assert [row[0] for row in rows[1:]] == [
        "january/scan.jpg",
        "february/scan.jpg",
        "february/scan.png",
    ]
    text = exports.export(documents, "md")
    assert "# january/scan.jpg" in text and "# february/scan.jpg" in text


def test_csv_of_plain_fields_lists_each_value_with_its_path() -> None:
    document = {"file": "form.png", "data": {"name": "Ada", "address": {"city": "London"}}}
    assert read_csv(exports.export([document], "csv"))[1:] == [
        ["form.png", "/name", "Ada"],
        ["form.png", "/address/city", "London"],
    ]


def test_markdown_shows_fields_rows_provenance_and_issues() -> None:
    text = exports.export([TABLE, INVOICE, FAILED], "md")
    assert "# parts.pdf" in text and "# invoice.png" in text and "# blank.pdf" in text
    assert "| name | qty |" in text and "| bolt | 10 |" in text
    assert "| /title | Parts |" in text  # fields outside the rows
    assert "local model tiny (nf4, cpu)" in text
    assert "page 1, `/rows/0/1` (text_layer, warning): 10 \\| not seen" in text  # pipes escaped
    assert "No data was extracted.\n- The answer was not valid JSON." in text
    assert "| /total | 34.51 |" in text


def test_an_export_file_is_written_whole(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out.jsonl"
    size = exports.write_export([TABLE, CHART], "jsonl", out)
    assert size == out.stat().st_size and len(out.read_text().splitlines()) == 2
    assert list(out.parent.iterdir()) == [out]  # no partial file left behind
    with pytest.raises(ValueError, match="Unknown export format"):
        exports.export([TABLE], "xlsx")


@pytest.mark.parametrize("kind", ["bar", "horizontal_bar", "line", "pie", "scatter", "area"])
def test_a_chart_replot_is_drawn_beside_the_original(tmp_path: Path, kind: str) -> None:
    data = {**CHART["data"], "chart_type": kind}
    original = Image.new("RGB", (480, 360), "white")
    assert has_series(data)
    out = render_replot(original, data, tmp_path / f"{kind}.png")
    with Image.open(out) as image:
        assert image.size == (1200, 550)
        right_half = image.crop((600, 0, 1200, 550)).convert("L")
        assert len(right_half.getcolors(maxcolors=1 << 16) or []) > 8  # series were drawn


def test_only_answers_with_points_are_replotted() -> None:
    assert not has_series({"series": []})
    assert not has_series({"series": [{"points": []}]})
    assert not has_series({"rows": [[1]]})
