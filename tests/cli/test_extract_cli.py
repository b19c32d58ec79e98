"""``visiondesk extract`` end to end: a batch with bad files, exports, exit codes, usage errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.engine.sample_documents import (
    write_bomb_png,
    write_chart_png,
    write_encrypted_pdf,
    write_pdf,
    write_truncated_pdf,
)

FAST = [
    "--one-pass",
    "--quant",
    "nf4",
    "--device",
    "cpu",
    "--max-new-tokens",
    "96",
    "--max-long-side",
    "256",
]


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    write_pdf(folder / "a-parts.pdf", [["Name Qty", "Bolt 10"], ["Nut 5"]])
    write_chart_png(folder / "sub" / "b-chart.png")
    (folder / "c-empty.png").write_bytes(b"")
    write_encrypted_pdf(folder / "d-locked.pdf")
    write_bomb_png(folder / "e-bomb.png")
    write_truncated_pdf(folder / "f-cut.pdf")
    (folder / "g-notes.pdf").write_text("not a pdf at all\n")
    (folder / "readme.txt").write_text("ignored: not a supported file type\n")
    (folder / ".hidden").mkdir()
    write_pdf(folder / ".hidden" / "skipped.pdf", [["x"]])
    return folder


def test_a_folder_batch_completes_despite_bad_files_and_names_each_failure(
    run_cli, tiny_model, batch: Path, tmp_path: Path
) -> None:
    out = tmp_path / "result.csv"
    result = run_cli(
        "extract", str(batch), "--schema", "table", "--model", str(tiny_model("llava")),
        "--out", str(out), *FAST,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr  # only bad input failed
    stderr = result.stderr
    assert "Extracted 2 of 7 files (3 pages)" in stderr
    failures = stderr.split("Failed:\n", 1)[1]
    for line in (
        "c-empty.png: c-empty.png is empty (0 bytes).",
        "d-locked.pdf: d-locked.pdf is password-protected",
        "e-bomb.png: e-bomb.png claims more than",
        "f-cut.pdf: f-cut.pdf is damaged or truncated",
        "g-notes.pdf: g-notes.pdf is named like a PDF but is not one",
    ):
        assert f"  {line}" in failures
    assert "[1/7] a-parts.pdf: page 2 ok" in stderr  # progress, per page
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0][0] == "file"
    assert {row[0] for row in rows[1:]} <= {"a-parts.pdf", "sub/b-chart.png"}  # below the folder
    assert f"Wrote {out}." in stderr


def test_json_to_stdout_carries_pages_provenance_and_page_ranges(
    run_cli, tiny_model, tmp_path: Path
) -> None:
    document = write_pdf(tmp_path / "three.pdf", [["one"], ["two"], ["three"]])
    result = run_cli(
        "extract", str(document), "--schema", "key_values", "--model", str(tiny_model("llava")),
        "--pages", "2-", "--format", "json", *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["schema_name"] == "key_values"
    assert [page["page"] for page in data["pages"]] == [2, 3]
    provenance = data["pages"][0]["provenance"]
    assert provenance["sha256"] == data["sha256"] and provenance["quant"] == "nf4"
    assert provenance["two_pass"] is False
    # Progress names the page being read, not a count of the pages read so far.
    assert "three.pdf: page 2 of 3: extracting…" in result.stderr
    assert "three.pdf: page 3 of 3: extracting…" in result.stderr
    assert "page 1" not in result.stderr


def test_a_page_limit_refuses_long_files_with_exit_code_3(run_cli, tiny_model, tmp_path) -> None:
    long = write_pdf(tmp_path / "long.pdf", [[f"p{n}"] for n in range(12)])
    result = run_cli(
        "extract", str(long), "--schema", "form", "--model", str(tiny_model("llava")),
        "--max-pages", "5", *FAST,
    )  # fmt: skip
    assert result.returncode == 3
    assert "long.pdf has 12 pages to read, more than the limit of 5" in result.stderr


def test_a_model_that_cannot_be_loaded_stops_the_batch_with_exit_code_4(run_cli, tmp_path) -> None:
    document = write_pdf(tmp_path / "a.pdf", [["x"]])
    result = run_cli(
        "extract", str(document), str(document.with_name("b.pdf")), "--schema", "form",
        "--model", str(tmp_path / "no-such-model"), *FAST,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert "Stopped early" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pages", "three"], "is not a page range"),
        (["--pages", "0"], "--pages '0': pages count from 1"),
        (["--pages", "1,3-1"], "'3-1' runs backwards; write 1-3"),
        (["--max-pages", "0"], "--max-pages must be at least 1"),
        (["--schema", "recipe"], "neither a built-in schema"),
        (["--format", "xlsx"], "invalid choice"),
        (["--one-pass", "--two-pass"], "not allowed with argument"),
    ],
)
def test_usage_errors_exit_with_code_2_before_any_work(
    run_cli, tmp_path: Path, extra: list[str], message: str
) -> None:
    document = write_pdf(tmp_path / "a.pdf", [["x"]])
    args = ["extract", str(document), "--schema", "table", "--model", "m", *extra]
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_broken_schema_file_is_one_clear_error(run_cli, tmp_path: Path) -> None:
    schema = tmp_path / "mine.json"
    schema.write_text('{"type": "object", "properties": {"a": {"type": "strng"}}}')
    document = write_pdf(tmp_path / "a.pdf", [["x"]])
    result = run_cli("extract", str(document), "--schema", str(schema), "--model", "m")
    assert result.returncode == 3
    assert "mine.json is not a valid JSON Schema" in result.stderr
