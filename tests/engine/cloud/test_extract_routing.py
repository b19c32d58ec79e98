"""Extraction through the routing policy: cloud schema modes, never send, fallback, and provenance."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine import protocol as p
from engine.protocol import cloud as c
from engine.protocol import extract as px
from tests.engine.harness import job_id
from tests.engine.sample_documents import write_chart_png, write_pdf
from tests.engine.wire.stack import finished

TABLE = {"title": "Parts", "header": ["Name", "Qty"], "rows": [["Bolt", "10"], ["Nut", "5"]]}


@pytest.fixture(scope="module")
def two_pages(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("documents")
    return write_pdf(folder / "parts.pdf", [["Name Qty", "Bolt 10"], ["Nut 5"]])


def extract(path: Path, **fields) -> px.Extract:
    fields.setdefault("options", px.ExtractOptions(two_pass=False))
    return px.Extract(job_id=job_id(), path=str(path), schema="table", **fields)


def pages_of(events: list[p.Event]) -> list[px.PageResult]:
    return [px.page_result(e.data) for e in events if isinstance(e, p.PartialResult)]


def test_a_cloud_backend_reads_every_page_in_its_schema_mode_and_records_who_and_why(
    engine, stack, two_pages
) -> None:
    stack.openai.json_answers.extend([TABLE, TABLE])
    events = engine.run_all(extract(two_pages, backend=c.OPENAI))
    end = finished(events)
    assert end.reason == "done", end.message
    document = px.document_result(end.result)
    assert document.status == "ok" and [page.page for page in document.pages] == [1, 2]
    for page in pages_of(events):
        assert page.provenance is not None
        assert (page.provenance.backend, page.provenance.model) == (
            "openai",
            c.DEFAULT_MODELS[c.OPENAI],
        )
        assert page.provenance.why == "chosen for this request"
    bodies = [request.body for request in stack.openai.requests]
    assert len(bodies) == 2  # one schema-mode request per page, nothing else
    for body in bodies:
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["strict"] is True
    routing = [e for e in events if isinstance(e, p.Progress) and e.stage == "routing"]
    assert routing and "chosen for this request" in routing[0].message


def test_two_passes_on_a_cloud_backend_transcribe_freely_then_answer_with_the_schema_tool(
    engine, stack, tmp_path: Path
) -> None:
    chart = write_chart_png(tmp_path / "chart.png")
    answer = {
        "chart_type": "bar",
        "title": "Sales",
        "x_axis": {"label": None, "unit": None, "scale": "category", "min": None, "max": None},
        "y_axis": {"label": None, "unit": None, "scale": "linear", "min": 0, "max": 100},
        "series": [{"name": "2024", "points": [{"x": "A", "y": 40}, {"x": "B", "y": 70}]}],
    }
    stack.anthropic.json_answers.append(answer)
    command = extract(chart, backend=c.ANTHROPIC, options=px.ExtractOptions(two_pass=True))
    command.schema = "chart"
    end = finished(engine.run_all(command))
    assert end.reason == "done", end.message
    first, second = stack.anthropic.requests
    assert not first.body.get("tools")  # the free transcription
    assert second.body["tools"] and second.body["tool_choice"]["type"] == "tool"
    page = px.document_result(end.result).pages[0]
    assert page.status == "ok" and page.data == answer
    assert page.transcription  # the first pass's text travelled into the result
    assert page.provenance is not None and page.provenance.two_pass is True


def test_never_send_keeps_the_document_on_this_machine_and_no_request_is_made(
    engine, stack, two_pages
) -> None:
    end = finished(engine.run_all(extract(two_pages, backend=c.ANTHROPIC, never_send=True)))
    assert end.reason == "error" and end.error_code == p.ErrorCode.CLOUD_NOT_ALLOWED
    assert "never send" in end.message
    assert stack.request_count() == 0


def test_local_only_refuses_a_named_provider_before_reading_anything(
    engine, stack, two_pages
) -> None:
    command = extract(two_pages, backend=c.GEMINI, policy=c.LOCAL_ONLY)
    end = finished(engine.run_all(command))
    assert end.error_code == p.ErrorCode.CLOUD_NOT_ALLOWED
    assert stack.request_count() == 0


def test_local_then_cloud_falls_back_when_the_local_model_is_missing_and_says_why(
    engine, stack, two_pages, tmp_path: Path
) -> None:
    stack.gemini.json_answers.extend([TABLE, TABLE])
    command = extract(
        two_pages,
        model=str(tmp_path / "not-installed"),
        device="cpu",
        backend=c.GEMINI,
        policy=c.LOCAL_THEN_CLOUD,
    )
    events = engine.run_all(command)
    end = finished(events)
    assert end.reason == "done", end.message
    pages = pages_of(events)
    assert [page.page for page in pages] == [1, 2]
    for page in pages:
        assert page.provenance is not None and page.provenance.backend == "gemini"
        assert page.provenance.why == "the local model is not installed"


def test_a_bad_file_fails_as_bad_input_before_any_request(engine, stack, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    end = finished(engine.run_all(extract(empty, backend=c.OPENAI)))
    assert end.error_code == p.ErrorCode.BAD_INPUT and "empty" in end.message
    assert stack.request_count() == 0


def test_pages_sent_back_as_completed_are_not_sent_to_the_provider_again(
    engine, stack, two_pages
) -> None:
    stack.openai.json_answers.extend([TABLE, TABLE])
    first = finished(engine.run_all(extract(two_pages, backend=c.OPENAI, pages=[1])))
    kept = msgspec.to_builtins(px.document_result(first.result).pages[0])
    stack.reset()
    stack.openai.json_answers.append(TABLE)
    events = engine.run_all(extract(two_pages, backend=c.OPENAI, completed_pages=[kept]))
    end = finished(events)
    assert end.reason == "done", end.message
    assert [page.page for page in pages_of(events)] == [2]  # only the missing page was read
    assert len(stack.openai.requests) == 1
    assert [page.page for page in px.document_result(end.result).pages] == [1, 2]
