"""The extraction evaluation: its metrics on hand-made perfect, partial and wrong answers, the
seed-stable synthetic set, and a short end-to-end run of the harness with a tiny model."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import metrics
from bench.eval_data import generate, load
from bench.eval_data.documents import number
from bench.eval_data.scans import rasterise

ROOT = Path(__file__).resolve().parents[2]

INVOICE = {
    "invoice_number": "INV-2024-0042",
    "invoice_date": "2024-03-05",
    "seller": {"name": "Acme Tools GmbH", "tax_id": "DE811907980"},
    "currency": "EUR",
    "line_items": [
        {"description": "Hex bolt M8", "quantity": 10, "amount": 4.0},
        {"description": "Safety gloves", "quantity": 2, "amount": 25.0},
    ],
    "total": 1234.56,
    "due_date": None,
}  # 12 expected leaves (None is not expected)

CHART = {
    "chart_type": "bar",
    "series": [
        {"name": "2023", "points": [{"x": "Q1", "y": 100.0}, {"x": "Q2", "y": 200.0}]},
        {"name": "2024", "points": [{"x": "Q1", "y": 0.0}, {"x": "Q2", "y": 50.0}]},
    ],
}

TABLE = {
    "title": "Sales",
    "header": ["Region", "Product", "Units"],
    "rows": [["North", "Cogs", "12"], [None, "Gears", "7"], ["South", "Cogs", "3"]],
}
SPANS = [{"row": 1, "column": 0, "rows": 2, "columns": 1}]  # North spans two rows


# --- reading values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,234.56", 1234.56), ("1.234,56", 1234.56), ("1 234,56", 1234.56),
        ("1'234.56", 1234.56), ("12,50", 12.5), ("€12.50", 12.5), ("(3.00)", -3.0),
        ("1,234", 1234.0), ("1.234.567", 1234567.0), ("EUR 99", 99.0), (7, 7.0),
        ("n/a", None), (None, None), (True, None),
    ],
)  # fmt: skip
def test_numbers_are_read_in_every_format_the_set_prints(text, value) -> None:
    assert metrics.parse_number(text) == value


def test_dates_are_compared_as_days_whatever_their_format() -> None:
    for printed in ("2024-03-05", "05.03.2024", "March 05, 2024", "5 Mar 2024", "03/05/2024"):
        assert metrics.values_match(printed, "2024-03-05"), printed
    assert not metrics.values_match("2024-03-06", "2024-03-05")
    assert not metrics.values_match("soon", "2024-03-05")


def test_strings_match_loosely_and_numbers_within_tolerance() -> None:
    assert metrics.values_match("ACME tools gmbh.", "Acme Tools GmbH")
    assert metrics.values_match("Acme Toois GmbH", "Acme Tools GmbH")  # one misread letter
    assert not metrics.values_match("Acme", "Acme Tools GmbH")
    assert metrics.values_match(1234.565, 1234.56) and metrics.values_match("1.234,56", 1234.56)
    assert metrics.values_match(1240.0, 1234.56)  # within 0.5 %
    assert not metrics.values_match(1250.0, 1234.56)
    assert metrics.values_match(None, None) and not metrics.values_match("x", None)


# --- field F1 ------------------------------------------------------------------------------------


def test_field_f1_is_one_for_a_perfect_answer_even_with_items_in_another_order() -> None:
    answer = copy.deepcopy(INVOICE)
    answer["line_items"].reverse()
    answer["total"] = "1.234,56"  # printed the German way
    answer["invoice_date"] = "05.03.2024"
    scores = metrics.field_f1(answer, INVOICE)
    assert scores == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "matched": 12,
                      "predicted": 12, "expected": 12}  # fmt: skip


def test_field_f1_counts_misses_and_inventions_for_a_partial_answer() -> None:
    answer = copy.deepcopy(INVOICE)
    answer["total"] = 999.0  # wrong
    answer["seller"]["tax_id"] = None  # missed
    del answer["line_items"][1]  # a missed item: three leaves
    answer["due_date"] = "2024-04-05"  # invented: the truth has none
    scores = metrics.field_f1(answer, INVOICE)
    assert scores["matched"] == 7 and scores["expected"] == 12 and scores["predicted"] == 9
    assert scores["precision"] == pytest.approx(7 / 9) and scores["recall"] == pytest.approx(7 / 12)
    assert scores["f1"] == pytest.approx(2 * (7 / 9) * (7 / 12) / (7 / 9 + 7 / 12))


def test_field_f1_is_zero_for_a_wrong_or_missing_answer() -> None:
    wrong = {"invoice_number": "X", "line_items": [{"description": "Tea", "amount": 1.0}]}
    assert metrics.field_f1(wrong, INVOICE)["f1"] == 0.0
    assert metrics.field_f1(None, INVOICE) == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                               "matched": 0, "predicted": 0, "expected": 12}  # fmt: skip
    assert metrics.field_f1(["not", "an", "object"], INVOICE)["f1"] == 0.0


def test_the_hungarian_pairing_finds_the_best_assignment_not_the_greedy_one() -> None:
    # Greedy would pair row 0 with column 0 (cost 1) and leave row 1 with cost 10.
    assert metrics.hungarian([[1, 2], [2, 10]]) == [(0, 1), (1, 0)]
    assert metrics.hungarian([[5, 1, 9], [1, 5, 9]]) == [(0, 1), (1, 0)]  # more columns than rows


# --- charts and tables ---------------------------------------------------------------------------


def test_relaxed_accuracy_on_perfect_partial_and_wrong_chart_answers() -> None:
    assert metrics.relaxed_accuracy(CHART, CHART)["accuracy"] == 1.0
    partial = copy.deepcopy(CHART)
    partial["series"].reverse()  # series are found by name, not order
    partial["series"][1]["points"][1]["y"] = 209.0  # 4.5 % off: still right
    partial["series"][0]["points"][1]["y"] = 60.0  # 20 % off: wrong
    partial["series"][0]["points"][0]["y"] = "0.04"  # truth 0: absolute tolerance
    scores = metrics.relaxed_accuracy(partial, CHART)
    assert (scores["correct"], scores["total"]) == (3, 4) and scores["accuracy"] == 0.75
    assert metrics.relaxed_accuracy({"series": []}, CHART)["accuracy"] == 0.0
    assert metrics.relaxed_accuracy(None, CHART)["accuracy"] == 0.0


def test_table_cell_f1_treats_a_merged_cell_given_once_or_repeated_alike() -> None:
    assert metrics.table_cell_f1(TABLE, TABLE, SPANS)["f1"] == 1.0
    repeated = copy.deepcopy(TABLE)
    repeated["rows"][1][0] = "North"  # the merged cell written into both rows it spans
    assert metrics.table_cell_f1(repeated, TABLE, SPANS)["f1"] == 1.0
    shifted = copy.deepcopy(TABLE)
    shifted["rows"][2] = ["Cogs", "3", None]  # a row read one column to the left
    scores = metrics.table_cell_f1(shifted, TABLE, SPANS)
    assert scores["cells"] == 12 and scores["precision"] == pytest.approx(9 / 11)
    assert scores["recall"] == pytest.approx(9 / 12)
    assert metrics.table_cell_f1({"header": [], "rows": []}, TABLE, SPANS)["f1"] == 0.0


# --- the synthetic set ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval-set")
    generate(folder, seed=7, counts={"chart": 3, "invoice": 3, "receipt": 2, "table": 3})
    return folder


def test_the_same_seed_gives_the_same_files_and_truth(small_set: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again, seed=7, counts={"chart": 3, "invoice": 3, "receipt": 2, "table": 3})
    first, second = load(small_set), load(again)
    assert [(i.id, i.file, i.truth, i.variant) for i in first] == [
        (i.id, i.file, i.truth, i.variant) for i in second
    ]
    for item in first:
        assert (small_set / item.file).read_bytes() == (again / item.file).read_bytes(), item.id
    other = generate(tmp_path / "other", seed=8, counts={"invoice": 1})
    assert other[0].truth != first[3].truth


def test_every_truth_is_valid_for_its_schema_and_scores_perfectly_against_itself(
    small_set: Path,
) -> None:
    from engine.extraction.schemas import load_builtin, validation_errors

    items = load(small_set)
    assert {item.variant["rendering"] for item in items} >= {"native", "png-72", "png-100"}
    for item in items:
        assert validation_errors(item.truth, load_builtin(item.schema).schema) == [], item.id
        assert metrics.field_f1(item.truth, item.truth)["f1"] == 1.0
        if item.kind == "chart":
            assert metrics.relaxed_accuracy(item.truth, item.truth)["accuracy"] == 1.0
        if item.kind == "table":
            cells = metrics.table_cell_f1(item.truth, item.truth, item.variant["spans"])
            assert cells["f1"] == 1.0


def test_a_native_invoice_prints_its_truth_in_its_number_format(tmp_path: Path) -> None:
    import pypdfium2 as pdfium

    (invoice,) = generate(tmp_path, seed=5, counts={"invoice": 1})
    assert invoice.variant["rendering"] == "native" and invoice.file.endswith(".pdf")
    document = pdfium.PdfDocument(str(tmp_path / invoice.file))
    text = document[0].get_textpage().get_text_range()
    document.close()
    style = invoice.variant["number_format"]
    assert number(invoice.truth["total"], style) in text
    assert invoice.truth["invoice_number"] in text
    for item in invoice.truth["line_items"]:
        assert item["description"] in text and number(item["amount"], style) in text
    assert rasterise(tmp_path / invoice.file, 72).size == (595, 842)  # A4 at 72 DPI


# --- the harness, end to end ---------------------------------------------------------------------


def test_the_harness_runs_end_to_end_with_a_tiny_model_and_reports_pages_per_second(
    tiny_model, tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "extraction_eval.py"),
         "--backend", str(tiny_model("llava")), "--kinds", "chart,invoice,table", "--count", "1",
         "--one-pass", "--quant", "nf4", "--device", "cpu", "--max-new-tokens", "64",
         "--max-long-side", "192", "--data", str(tmp_path / "set"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [d["id"] for d in report["documents"]] == ["chart-000", "invoice-000", "table-000"]
    assert set(report["by_kind"]) == {"chart", "invoice", "table"}
    overall = report["overall"]
    assert overall["documents"] == 3 and overall["pages"] == 3
    assert overall["pages_per_s"] > 0 and report["load_s"] > 0
    for document in report["documents"]:
        assert all(0.0 <= value <= 1.0 for value in document["scores"].values())
    assert "relaxed_accuracy" in report["documents"][0]["scores"]
    assert "cell_f1" in report["documents"][2]["scores"]
    assert "pages/s" in result.stdout and "field F1" in result.stdout
