"""PDF pages through the renderer process: pixels, text layer, clear errors, crash recovery."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from engine.documents import pdf
from engine.errors import BadInput
from tests.engine.sample_documents import (
    INVOICE_LINES,
    write_encrypted_pdf,
    write_pdf,
    write_truncated_pdf,
)


@pytest.fixture
def invoice_pdf(tmp_path: Path) -> Path:
    return write_pdf(tmp_path / "invoice.pdf", [INVOICE_LINES, ["Page two", "Total 34.51"]])


def test_page_count_and_sizes_come_from_the_renderer(invoice_pdf: Path) -> None:
    info = pdf.pdf_info(invoice_pdf)
    assert info.page_count == 2
    assert info.sizes_pt == [(612.0, 792.0), (612.0, 792.0)]


def test_a_page_renders_at_the_dpi_that_fills_the_long_side_budget(invoice_pdf: Path) -> None:
    page = pdf.render_page(invoice_pdf, 0, long_side=1400)
    assert page.height == 1400  # portrait Letter: the height is the long side
    assert page.width == round(1400 * 612 / 792)
    assert page.dpi == pytest.approx(1400 / 11, rel=0.01)  # 11 inches tall
    image = page.to_image()
    assert image.mode == "RGB" and image.size == (page.width, page.height)
    assert image.getextrema() != ((255, 255), (255, 255), (255, 255))  # the text was drawn


def test_the_text_layer_is_extracted_with_the_page(invoice_pdf: Path) -> None:
    first = pdf.render_page(invoice_pdf, 0, long_side=300)
    second = pdf.render_page(invoice_pdf, 1, long_side=300)
    assert "Total 34.51 EUR" in first.text and "Acme Tools GmbH" in first.text
    assert second.text.splitlines() == ["Page two", "Total 34.51"]


def test_a_tiny_page_is_not_blown_up_past_the_dpi_cap(tmp_path: Path) -> None:
    stamp = write_pdf(tmp_path / "stamp.pdf", [["x"]], size=(36, 36))  # half an inch square
    page = pdf.render_page(stamp, 0, long_side=1536)
    assert page.dpi == pdf.MAX_DPI
    assert page.width == page.height == 200


def test_an_encrypted_pdf_is_refused_with_a_sentence_about_the_password(tmp_path: Path) -> None:
    locked = write_encrypted_pdf(tmp_path / "locked.pdf")
    with pytest.raises(BadInput, match=r"locked\.pdf is password-protected"):
        pdf.pdf_info(locked)


def test_a_truncated_pdf_is_reported_as_damaged(tmp_path: Path) -> None:
    cut = write_truncated_pdf(tmp_path / "cut.pdf")
    with pytest.raises(BadInput, match=r"cut\.pdf is damaged or truncated"):
        pdf.pdf_info(cut)


def test_a_text_file_named_pdf_is_recognised_before_pdfium_sees_it(tmp_path: Path) -> None:
    fake = tmp_path / "notes.pdf"
    fake.write_text("Dear team,\nthe numbers are attached.\n")
    with pytest.raises(
        BadInput, match=r"notes\.pdf is named like a PDF but is not one.*plain text"
    ):
        pdf.pdf_info(fake)


def test_an_empty_file_is_reported_as_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(BadInput, match=r"empty \(0 bytes\)"):
        pdf.pdf_info(empty)


def test_the_renderer_keeps_serving_after_bad_files(tmp_path: Path, invoice_pdf: Path) -> None:
    for bad in (write_truncated_pdf(tmp_path / "a.pdf"), write_encrypted_pdf(tmp_path / "b.pdf")):
        with pytest.raises(BadInput):
            pdf.pdf_info(bad)
    assert pdf.pdf_info(invoice_pdf).page_count == 2


def test_a_renderer_that_died_between_calls_is_restarted_transparently(invoice_pdf: Path) -> None:
    renderer = pdf.renderer()
    pdf.pdf_info(invoice_pdf)  # make sure it is running
    process = renderer._process
    assert process is not None
    process.kill()
    process.wait()
    assert pdf.pdf_info(invoice_pdf).page_count == 2
    assert renderer._process is not process


# Fault injection: stand-in renderer processes that crash or hang in the middle of a call.
CRASHES = "import sys; sys.stdin.buffer.read(4); sys.exit(11)"
HANGS = "import sys, time; sys.stdin.buffer.read(4); time.sleep(60)"


def test_a_crash_during_a_call_fails_that_call_and_the_next_call_starts_afresh(
    invoice_pdf: Path,
) -> None:
    renderer = pdf.PdfRenderer(command=[sys.executable, "-c", CRASHES])
    with pytest.raises(BadInput, match=r"invoice\.pdf made the PDF renderer crash"):
        renderer.call("describe", str(invoice_pdf), file=invoice_pdf)
    first = renderer._process
    with pytest.raises(BadInput, match="crash"):
        renderer.call("describe", str(invoice_pdf), file=invoice_pdf)
    assert renderer._process is not first or first is None
    renderer.close()


def test_a_hung_renderer_is_stopped_after_the_timeout(invoice_pdf: Path) -> None:
    renderer = pdf.PdfRenderer(command=[sys.executable, "-c", HANGS], timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(BadInput, match="took longer than 2 s and was stopped"):
        renderer.call("describe", str(invoice_pdf), file=invoice_pdf)
    assert time.monotonic() - started < 10
    assert renderer._process is None  # killed; the next call starts a new one
    renderer.close()


def test_calls_from_several_threads_are_serialised_safely(invoice_pdf: Path) -> None:
    texts: list[str] = []
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            texts.append(pdf.render_page(invoice_pdf, index % 2, long_side=200).text)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(t.splitlines()[0] for t in texts) == ["INVOICE 2024-017"] * 4 + ["Page two"] * 4
