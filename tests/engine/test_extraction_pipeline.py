"""The page pipeline: two passes, validation, checks, one retry, merge, provenance, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from engine import protocol as p
from engine.backends.base import GenerationResult
from engine.backends.local_hf import LocalHFBackend
from engine.documents import pages
from engine.extraction import bounds, checks, prompts, schemas
from engine.extraction.merge import merge_pages
from engine.extraction.pipeline import PagePipeline, document_result
from engine.extraction.replot import has_series
from engine.protocol import extract as px
from engine.runtime import LoadSpec
from tests.engine.harness import EngineHarness, job_id
from tests.engine.sample_documents import (
    INVOICE_LINES,
    write_bomb_png,
    write_chart_png,
    write_encrypted_pdf,
    write_pdf,
    write_truncated_pdf,
)

GOOD_INVOICE = {
    "invoice_number": "2024-017",
    "invoice_date": "2024-03-05",
    "due_date": None,
    "seller": {"name": "Acme Tools GmbH", "address": None, "tax_id": None},
    "buyer": {"name": None, "address": None, "tax_id": None},
    "currency": "EUR",
    "line_items": [
        {"description": "Widget", "quantity": 2, "unit_price": 12.5, "amount": 25.0},
        {"description": "Bolt", "quantity": 10, "unit_price": 0.4, "amount": 4.0},
    ],
    "subtotal": 29.0,
    "tax": 5.51,
    "total": 34.51,
}


# --- checks ------------------------------------------------------------------------------------


def test_a_consistent_invoice_passes_every_check_against_its_text_layer() -> None:
    assert checks.run_checks(GOOD_INVOICE, "\n".join(INVOICE_LINES)) == []


def test_arithmetic_errors_are_reported_on_the_field_they_concern() -> None:
    bad = json.loads(json.dumps(GOOD_INVOICE))
    bad["line_items"][1]["amount"] = 40.0  # 10 × 0.40 is 4
    bad["total"] = 30.0
    issues = {issue.path: issue for issue in checks.run_checks(bad)}
    assert "10 × 0.4 = 4, but the amount is 40" in issues["/line_items/1/amount"].message
    assert "add up to 65, but the subtotal is 29" in issues["/subtotal"].message
    assert "but the total is 30" in issues["/total"].message
    assert {issue.check for issue in issues.values()} == {"arithmetic"}


def test_a_total_with_tax_included_is_not_flagged() -> None:
    receipt = {"items": [{"amount": 10.0}, {"amount": 9.99}], "tax": 3.19, "total": 19.99}
    assert checks.arithmetic(receipt) == []


def test_pie_shares_must_add_up_to_100_percent() -> None:
    pie = {"chart_type": "pie", "series": [{"points": [{"x": "a", "y": 60}, {"x": "b", "y": 30}]}]}
    (issue,) = checks.run_checks(pie)
    assert (issue.path, issue.check) == ("/series/0", "shares")
    assert "90 %" in issue.message
    pie["series"][0]["points"].append({"x": "c", "y": 10})
    assert checks.run_checks(pie) == []
    fractions = {"chart_type": "pie", "series": [{"points": [{"x": "a", "y": 0.25}, {"y": 0.75}]}]}
    assert checks.run_checks(fractions) == []


def test_numbers_missing_from_the_text_layer_are_flagged_in_either_number_format() -> None:
    text = "Summe 1.234,56 EUR\nMenge 3\nDatum 05.03.2024"
    data = {"total": 1234.56, "quantity": 3, "made_up": 99.5, "zero": 0}
    issues = checks.run_checks(data, text)
    assert [(i.path, i.check, i.severity) for i in issues] == [
        ("/made_up", "text_layer", "warning")
    ]
    assert checks.text_numbers("Total: 1,234.56 and 7'500.00") >= {1234.56, 7500.0}


def test_bars_outside_the_printed_axis_range_are_flagged() -> None:
    chart = {
        "y_axis": {"min": 0, "max": 100},
        "series": [{"points": [{"x": "a", "y": 50}, {"x": "b", "y": 180}]}],
    }
    (issue,) = checks.run_checks(chart)
    assert issue.path == "/series/0/points/1/y" and issue.check == "axis_range"


# --- merge -------------------------------------------------------------------------------------


def test_pages_merge_deterministically_whatever_order_they_arrive_in() -> None:
    page1 = {"title": "Parts", "header": ["name", "qty"], "rows": [["bolt", "10"]]}
    page2 = {
        "title": "Parts (cont.)",
        "header": ["name", "qty"],
        "rows": [["name", "qty"], ["nut", "5"]],
    }
    page3 = {"title": None, "header": [], "rows": [["washer", "3"]]}
    forward, issues = merge_pages([(1, page1), (2, page2), (3, page3)])
    backward, _ = merge_pages([(3, page3), (1, page1), (2, page2)])
    assert (
        forward
        == backward
        == {
            "title": "Parts",
            "header": ["name", "qty"],
            "rows": [["bolt", "10"], ["nut", "5"], ["washer", "3"]],  # repeated header dropped
        }
    )
    (conflict,) = issues
    assert conflict.path == "/title" and "Page 2" in conflict.message
    assert page1["rows"] == [["bolt", "10"]]  # the pages' own data is untouched


def test_line_items_from_several_pages_are_concatenated_and_totals_taken_once() -> None:
    first = {
        **GOOD_INVOICE,
        "line_items": GOOD_INVOICE["line_items"][:1],
        "subtotal": None,
        "tax": None,
        "total": None,
    }
    second = {**GOOD_INVOICE, "line_items": GOOD_INVOICE["line_items"][1:]}
    merged, issues = merge_pages([(1, first), (2, second)])
    assert merged == GOOD_INVOICE
    assert issues == []


# --- the pipeline with a scripted backend (deterministic answers) -------------------------------


class ScriptedBackend:
    """Answers with the texts it is given, in order, and records what it was asked."""

    name = "local"

    def __init__(self, answers: list[tuple[str, str]]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def info(self) -> p.ModelInfo:
        return p.ModelInfo("scripted", "/dev/null", "test", "none", "cpu", "float32")

    def chat(
        self, messages, sampling, *, on_text, cancelled, json_schema=None, image_max_pixels=None
    ) -> GenerationResult:
        self.calls.append(
            {"prompt": messages[-1].text, "images": messages[-1].images, "schema": json_schema,
             "max_new_tokens": sampling.max_new_tokens, "image_max_pixels": image_max_pixels}
        )  # fmt: skip
        text, reason = self.answers.pop(0)
        return GenerationResult(text=text, reason=reason, completion_tokens=len(text) // 3)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


@pytest.fixture
def invoice_page(tmp_path: Path) -> tuple[pages.DocumentInfo, pages.Page]:
    info = pages.inspect(write_pdf(tmp_path / "invoice.pdf"))
    return info, pages.load_page(info, 1, pages.PixelBudget(long_side=300, max_pixels=300 * 300))


def pipeline(
    backend: Any, info: pages.DocumentInfo, tmp_path: Path, **options: Any
) -> PagePipeline:
    schema = schemas.load_builtin("invoice")
    return PagePipeline(backend, schema, px.ExtractOptions(**options), info, tmp_path)


def test_two_passes_feed_the_transcription_and_text_layer_into_the_constrained_pass(
    invoice_page, tmp_path: Path
) -> None:
    info, page = invoice_page
    backend = ScriptedBackend([("| Widget | 2 |", "done"), (json.dumps(GOOD_INVOICE), "done")])
    result = pipeline(backend, info, tmp_path).run(page)

    transcribe, extract = backend.calls
    assert transcribe["schema"] is None and transcribe["prompt"] == prompts.TRANSCRIBE
    assert extract["schema"]["properties"]["line_items"]["maxItems"] == 100
    assert "| Widget | 2 |" in extract["prompt"] and "Total 34.51 EUR" in extract["prompt"]
    assert result.status == "ok" and result.data == GOOD_INVOICE and result.issues == []
    assert result.transcription == "| Widget | 2 |"
    provenance = result.provenance
    assert provenance is not None
    assert (provenance.page, provenance.sha256, provenance.schema_name) == (
        1,
        info.sha256,
        "invoice",
    )
    assert provenance.schema_version == schemas.load_builtin("invoice").version
    assert provenance.prompt_version == prompts.PROMPT_VERSION
    assert (provenance.backend, provenance.model, provenance.quant) == ("local", "scripted", "none")
    assert provenance.two_pass and provenance.attempts == 1 and provenance.text_layer
    assert {"render_s", "transcribe_s", "extract_s", "checks_s", "total_s"} <= set(
        provenance.timings
    )


def test_a_failed_check_is_reported_on_the_field_after_one_retry_in_the_other_mode(
    invoice_page, tmp_path: Path
) -> None:
    info, page = invoice_page
    wrong = {**GOOD_INVOICE, "total": 44.51}
    backend = ScriptedBackend(
        [(json.dumps(wrong), "done"), ("transcript", "done"), (json.dumps(wrong), "done")]
    )
    result = pipeline(backend, info, tmp_path, two_pass=False).run(page)

    answers = [call for call in backend.calls if call["schema"] is not None]
    assert len(answers) == 2  # one retry, no more
    assert "A transcription" not in answers[0]["prompt"]
    assert "transcript" in answers[1]["prompt"]
    assert result.provenance is not None and result.provenance.attempts == 2
    assert result.status == "ok"  # valid for the schema; the check failure is on the field
    on_total = {(issue.check, issue.severity) for issue in result.issues if issue.path == "/total"}
    assert on_total == {("arithmetic", "error"), ("text_layer", "warning")}  # 44.51 is not printed
    (retry,) = [issue for issue in result.issues if issue.check == "retry"]
    assert "retried with two passes" in retry.message


def test_the_retry_wins_when_it_fixes_the_check(invoice_page, tmp_path: Path) -> None:
    info, page = invoice_page
    wrong = {**GOOD_INVOICE, "total": 44.51}
    backend = ScriptedBackend(
        [(json.dumps(wrong), "done"), ("transcript", "done"), (json.dumps(GOOD_INVOICE), "done")]
    )
    result = pipeline(backend, info, tmp_path, two_pass=False).run(page)
    assert result.data == GOOD_INVOICE
    assert [issue.check for issue in result.issues] == ["retry"]
    assert result.provenance is not None and result.provenance.two_pass
    # Pages come rendered within the extraction's budget: the model does not scale them again.
    assert [call["image_max_pixels"] for call in backend.calls] == [
        px.ExtractOptions().max_pixels
    ] * 3


def test_an_answer_cut_off_at_the_limit_is_retried_with_limits_that_fit_the_budget(
    invoice_page, tmp_path: Path
) -> None:
    info, page = invoice_page
    backend = ScriptedBackend(
        [('{"invoice_number": "20', "length"), (json.dumps(GOOD_INVOICE), "done")]
    )
    result = pipeline(backend, info, tmp_path, two_pass=False, max_new_tokens=2000).run(page)

    retry_schema = backend.calls[1]["schema"]
    assert retry_schema[bounds.WHITESPACE_KEY] == 0  # compact JSON on the retry
    assert bounds.worst_case_bytes(retry_schema, 0) < 2000
    assert result.status == "ok" and result.data == GOOD_INVOICE
    assert "ran past the token limit" in result.issues[-1].message


def test_an_answer_that_never_closes_is_a_failed_page_not_a_result(
    invoice_page, tmp_path: Path
) -> None:
    info, page = invoice_page
    backend = ScriptedBackend([('{"a', "length"), ('{"b', "length")])
    result = pipeline(backend, info, tmp_path, two_pass=False, max_new_tokens=2000).run(page)
    assert result.status == "failed" and result.data is None
    assert "ran past the 2000-token limit" in result.error


def test_document_status_and_merge_cover_ok_partial_and_failed_pages(
    invoice_page, tmp_path
) -> None:
    info, _ = invoice_page
    schema = schemas.load_builtin("invoice")
    ok = px.PageResult(page=1, status="ok", data=GOOD_INVOICE)
    failed = px.PageResult(page=2, status="failed", error="boom")
    assert document_result(info, schema, [ok], 1.0).status == "ok"
    partial = document_result(info, schema, [failed, ok], 1.0)
    assert partial.status == "partial" and partial.data == GOOD_INVOICE
    assert [pg.page for pg in partial.pages] == [1, 2]
    assert document_result(info, schema, [failed], 1.0).status == "failed"


# --- the pipeline with a real tiny model ------------------------------------------------------


def test_a_random_model_still_gives_a_valid_invoice_from_a_pdf_page(
    tiny_model, invoice_page, tmp_path: Path
) -> None:
    info, page = invoice_page
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), quant="none", device="cpu"))
    result = pipeline(
        backend, info, tmp_path, max_new_tokens=360, transcription_max_new_tokens=24
    ).run(page)

    assert result.status == "ok", result.issues
    jsonschema.validate(result.data, schemas.load_builtin("invoice").schema)
    assert result.provenance is not None
    reasons = result.provenance.finish_reasons
    assert reasons[0] == "transcription:length" and reasons[-1] == "answer:done"
    if reasons[1] == "answer:length":  # random weights ramble: the fitted retry closed it
        assert result.provenance.attempts == 2


# --- through the engine process -----------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    harness = EngineHarness()
    yield harness
    harness.close()


def collect(engine: EngineHarness, command: p.Command) -> tuple[list[px.PageResult], p.Finished]:
    engine.send(command)
    partials = []
    for event in engine.job_events(command.job_id):
        if isinstance(event, p.PartialResult):
            partials.append(px.page_result(event.data))
        if isinstance(event, p.Finished):
            return partials, event
    raise AssertionError("unreachable")


def extract(path: Path, model: Path | None, **fields: Any) -> px.Extract:
    options = px.ExtractOptions(
        two_pass=False, max_new_tokens=120, max_long_side=256, max_pixels=256 * 192
    )
    return px.Extract(
        job_id=job_id(), path=str(path), schema="table", model=str(model) if model else None,
        quant="nf4", device="cpu", options=options, **fields,
    )  # fmt: skip


def test_bad_files_each_fail_with_a_clear_error_and_the_rest_of_the_batch_completes(
    engine, tiny_model, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    renamed = tmp_path / "notes.pdf"
    renamed.write_text("meeting notes, not a PDF\n")
    big = write_pdf(tmp_path / "big.pdf", [[f"page {n}"] for n in range(500)])
    batch = [
        (empty, {}, r"empty \(0 bytes\)"),
        (write_truncated_pdf(tmp_path / "cut.pdf"), {}, "damaged or truncated"),
        (write_encrypted_pdf(tmp_path / "locked.pdf"), {}, "password-protected"),
        (write_bomb_png(tmp_path / "bomb.png"), {}, "decompression bomb"),
        (renamed, {}, "named like a PDF but is not one"),
        (big, {"max_pages": 20}, "500 pages to read, more than the limit of 20"),
        (write_pdf(tmp_path / "good.pdf", [["Name Qty", "Bolt 10"]]), {}, None),
    ]
    model = tiny_model("llava")
    for path, fields, message in batch:
        partials, finished = collect(engine, extract(path, model, **fields))
        if message is None:
            assert finished.reason == "done", finished.message
            document = px.document_result(finished.result)
            assert document.status == "ok" and len(partials) == 1
        else:
            assert (finished.reason, finished.error_code) == ("error", "bad_input")
            assert path.name in finished.message
            assert __import__("re").search(message, finished.message), finished.message
            assert partials == []


def test_an_extract_job_streams_each_page_and_a_resubmission_extracts_only_missing_pages(
    engine, tiny_model, tmp_path: Path
) -> None:
    document = write_pdf(tmp_path / "parts.pdf", [["Name Qty", "Bolt 10"], ["Nut 5"], ["Washer 3"]])
    model = tiny_model("llava")
    partials, finished = collect(engine, extract(document, model, pages=[1, 3]))
    assert finished.reason == "done"
    assert [page.page for page in partials] == [1, 3]
    stored = [msgspec.to_builtins(page) for page in partials]  # what a client keeps

    # After a crash the client resubmits every page, with the ones it already has.
    resumed, finished = collect(
        engine, extract(document, model, page_spec="1-3", completed_pages=stored)
    )
    assert [page.page for page in resumed] == [2]  # each page extracted exactly once
    result = px.document_result(finished.result)
    assert [page.page for page in result.pages] == [1, 2, 3]
    assert msgspec.to_builtins(result.pages[0]) == stored[0]
    assert result.status == "ok"
    jsonschema.validate(result.data, schemas.load_builtin("table").schema)
    assert all(page.provenance and page.provenance.quant == "nf4" for page in result.pages)


def test_completed_pages_from_a_changed_file_are_refused(
    engine, tiny_model, tmp_path: Path
) -> None:
    document = write_pdf(tmp_path / "doc.pdf", [["one"], ["two"]])
    partials, _ = collect(engine, extract(document, tiny_model("llava"), pages=[1]))
    write_pdf(document, [["one, edited"], ["two"]])
    _, finished = collect(
        engine, extract(document, None, completed_pages=[msgspec.to_builtins(partials[0])])
    )
    assert finished.error_code == "bad_input" and "different version" in finished.message


def test_cancel_between_pages_keeps_the_finished_pages(engine, tiny_model, tmp_path: Path) -> None:
    document = write_pdf(tmp_path / "long.pdf", [[f"row {n}"] for n in range(30)])
    command = extract(document, tiny_model("llava"))
    engine.send(command)
    partials = []
    for event in engine.job_events(command.job_id):
        if isinstance(event, p.PartialResult):
            partials.append(event)
            if len(partials) == 1:
                engine.send(p.Cancel(job_id=command.job_id))
        if isinstance(event, p.Finished):
            break
    assert event.reason == "cancelled"
    result = px.document_result(event.result)
    assert 1 <= len(result.pages) < 30 and len(result.pages) == len(partials)
    assert result.status != "ok"  # pages were left unread: never reported as a whole document


def test_pages_the_client_holds_merge_again_after_the_file_was_moved(
    engine, tmp_path: Path
) -> None:
    document = write_pdf(tmp_path / "moved.pdf", [["one"], ["two"]])
    held = [
        {"page": 1, "status": "ok", "data": {"title": "Edited", "header": ["a"], "rows": [["1"]]}},
        {"page": 2, "status": "ok", "data": {"title": None, "header": ["a"], "rows": [["2"]]}},
    ]
    document.rename(tmp_path / "filed-away.pdf")  # a merge needs nothing from the file
    command = extract(document, None, pages=[1, 2], completed_pages=held, never_send=True)
    partials, finished = collect(engine, command)
    assert finished.reason == "done", finished.message
    result = px.document_result(finished.result)
    assert partials == [] and [page.page for page in result.pages] == [1, 2]
    assert result.data == {"title": "Edited", "header": ["a"], "rows": [["1"], ["2"]]}
    assert result.status == "ok" and result.file == str(document)


def test_a_chart_image_gets_a_replot_beside_the_original(
    engine, tiny_model, tmp_path: Path
) -> None:
    chart = write_chart_png(tmp_path / "sales.png")
    command = extract(chart, tiny_model("qwen2_vl"), replot_dir=str(tmp_path / "replots"))
    command.schema = "chart"
    command.options.max_new_tokens = 400
    partials, finished = collect(engine, command)
    assert finished.reason == "done", finished.message
    (page,) = partials
    jsonschema.validate(page.data, schemas.load_builtin("chart").schema)
    # A re-plot is drawn whenever the answer has points to draw.
    assert bool(page.replot) == has_series(page.data)
    if page.replot:
        assert Path(page.replot).stat().st_size > 1000


def test_schemas_can_be_listed_and_checked_and_results_exported(engine, tmp_path: Path) -> None:
    _, listed = collect(engine, px.ListSchemas(job_id=job_id()))
    assert [s["name"] for s in listed.result["schemas"]] == list(px.BUILTIN_SCHEMAS)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _, checked = collect(engine, px.CheckSchema(job_id=job_id(), schema=str(bad)))
    assert checked.error_code == "bad_input" and "not valid JSON" in checked.message
    document = {"file": "/x/a.pdf", "status": "ok", "data": {"header": ["a"], "rows": [["1"]]}}
    out = tmp_path / "out" / "rows.csv"
    _, exported = collect(
        engine,
        px.ExportResults(job_id=job_id(), documents=[document], format="csv", out_path=str(out)),
    )
    assert exported.result["path"] == str(out)
    assert out.read_text() == "file,a\na.pdf,1\n"


def test_inspect_and_thumbnails_work_without_a_model(engine, tmp_path: Path) -> None:
    document = write_pdf(tmp_path / "two.pdf", [["one"], ["two"]])
    _, inspected = collect(engine, px.InspectDocument(job_id=job_id(), path=str(document)))
    assert inspected.result["page_count"] == 2 and inspected.result["format"] == "PDF"
    _, rendered = collect(
        engine,
        px.RenderPages(
            job_id=job_id(), path=str(document), out_dir=str(tmp_path / "thumbs"), max_long_side=64
        ),
    )
    thumbs = rendered.result["pages"]
    assert [t["page"] for t in thumbs] == [1, 2]
    assert all(Path(t["path"]).is_file() and max(t["width"], t["height"]) == 64 for t in thumbs)


def test_a_lora_adapter_reads_the_pages_and_is_named_in_their_provenance(
    engine, tiny_model, tmp_path: Path
) -> None:
    """The adapter Chat uses (the fine-tune wizard's "Use in chat and extraction") reads the
    document too, and each page says so. Made in full precision with its projector saved whole
    (as the wizard's recipes do), it is used over the 4-bit base all the same."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = tiny_model("llava")
    lora = LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
        modules_to_save=["multi_modal_projector"],
    )  # fmt: skip
    adapter = tmp_path / "run" / "adapter"
    get_peft_model(AutoModelForImageTextToText.from_pretrained(base), lora).save_pretrained(adapter)
    document = write_pdf(tmp_path / "invoice.pdf")

    results, finished = collect(engine, extract(document, base, adapter=str(adapter)))
    assert finished.reason == "done", finished.message
    assert results and all(page.provenance.adapter == str(adapter) for page in results)

    chat = p.Chat(
        job_id=job_id(), messages=[p.ChatMessage(role="user", text="Hi")], model=str(base),
        quant="nf4", device="cpu", sampling=p.Sampling(max_new_tokens=2), adapter=str(adapter),
    )  # fmt: skip
    finished, _ = engine.run(chat)
    assert finished.result["adapter"] == str(adapter)  # the chat card names it too
    _, without = collect(engine, extract(document, base))
    assert all(page["provenance"]["adapter"] == "" for page in without.result["pages"])
