"""The Extract page: drop, read with the real engine, check, edit, export; kill -9 mid-batch;
pause and resume; never send; problems highlighted with their reasons."""

from __future__ import annotations

import collections
import csv
import io
import json
import os
import signal
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QLineEdit, QMessageBox

from desktop import paths
from desktop.engine_client import EngineClient
from desktop.extraction_queue import BatchStatus, ExtractionQueue, FileStatus, default_path
from desktop.main_window import MainWindow
from desktop.state import ModelCatalog, ModelChoice
from desktop.storage import Storage
from desktop.views.extract import ExtractView
from engine import protocol as p
from engine.protocol import extract as px
from tests.desktop.helpers import FAKE_MODEL, make_image, sent_commands
from tests.engine.sample_documents import write_pdf

FAST = {"max_new_tokens": 96, "max_long_side": 192, "max_pixels": 192 * 192}


def drop(widget, files: list[Path]) -> None:
    """A drag-enter and a drop of local files, as a file manager sends them."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
    centre = widget.rect().center()
    enter = QDragEnterEvent(centre, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(widget, event)


@pytest.fixture
def real_window(qtbot, settings, tiny_model, tmp_path: Path):
    """The main window on the real engine with the tiny LLaVA model chosen (NF4, CPU)."""
    storage = Storage(paths.database_path())
    client = EngineClient(restart_delay_ms=100, log_path=tmp_path / "engine.log")
    window = MainWindow(storage, client, ModelCatalog(settings), settings=settings)
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.set_model_choice(ModelChoice(str(tiny_model("llava")), "nf4", "cpu"))
    window.show()
    window.show_page("extract")
    client.start()
    qtbot.waitUntil(client.is_ready, timeout=120_000)
    yield window
    client.stop()
    storage.close()


def read_quickly(view: ExtractView, schema: str) -> None:
    """One pass, small pages and short answers: what the tiny model's tests need."""
    view.session.choose_schema(schema)
    view.two_pass_box.setChecked(False)
    view.session.options = dict(FAST)


def shot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("VISIONDESK_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- the real engine -----------------------------------------------------------------------------


def test_a_dropped_pdf_is_read_shown_beside_its_fields_and_exported_as_csv(
    qtbot, real_window, tmp_path: Path
) -> None:
    view: ExtractView = real_window.extract_view
    read_quickly(view, "table")
    document = write_pdf(tmp_path / "parts.pdf", [["Name Qty", "Bolt 10", "Nut 5"], ["Washer 7"]])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    drop(view, [document, empty])

    file, bad = view.session.files()
    qtbot.waitUntil(lambda: view.session.batch.status == BatchStatus.DONE, timeout=120_000)  # type: ignore[union-attr]
    failed = view.queue.file(bad.id)
    assert failed is not None and failed.status == FileStatus.FAILED
    assert failed.error == "empty.png is empty (0 bytes)."  # one clear sentence, on that file
    assert view.queue_panel.tree.topLevelItem(1).text(1) == "Failed"
    assert view.queue_panel.tree.topLevelItem(1).toolTip(1) == failed.error
    done = view.queue.file(file.id)
    assert done is not None and done.status == FileStatus.DONE, done and done.error
    assert done.document is not None and [pg["page"] for pg in done.document["pages"]] == [1, 2]
    qtbot.waitUntil(lambda: view.page_panel.thumbnails.count() == 2, timeout=60_000)

    # The page and its result side by side: the picture, the fields, the provenance.
    assert view.file_id == file.id and view.page == 1
    assert not view.page_panel._pixmap.isNull()
    assert view.editor.topLevelItemCount() > 0
    assert "nf4" in view.provenance.text() and "one pass" in view.provenance.text()
    assert view.status_badge.isVisible()
    view.page_panel.thumbnails.setCurrentRow(1)
    assert view.page == 2 and "page 2" in view.result_title.text()

    out = tmp_path / "export" / "parts.csv"
    with qtbot.waitSignal(view.session.export_finished, timeout=60_000) as finished:
        assert view.export_to("csv", out)
    assert finished.args == [str(out), ""]
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[0][0] == "file" and {row[0] for row in rows[1:]} <= {"parts.pdf"}
    view.page_panel.thumbnails.setCurrentRow(0)
    assert real_window.grab().save(str(shot_dir(tmp_path) / "extract-view.png"))

    # The file that failed says why where its fields would be, and can be read again.
    view.queue_panel.select(bad.id)
    assert view.file_id == bad.id and view.result_title.text() == "empty.png"
    assert view.issue_list.isVisible()
    assert view.issue_list.item(0).text() == f"✖ file: {failed.error}"
    qtbot.waitUntil(lambda: "No preview" in view.page_panel.image.text(), timeout=30_000)
    assert "empty" in view.page_panel.image.text()  # not "Rendering the page…" for ever
    assert view.read_again_button.isVisible()
    qtbot.mouseClick(view.read_again_button, Qt.MouseButton.LeftButton)
    assert view.queue.file(bad.id).status in (FileStatus.QUEUED, FileStatus.RUNNING)
    qtbot.waitUntil(lambda: view.queue.file(bad.id).status == FileStatus.FAILED, timeout=60_000)
    assert view.issue_list.item(0).text() == f"✖ file: {failed.error}"

    # "Ask in chat": the page on screen goes to a new conversation, rendered anew at chat size.
    view.queue_panel.select(file.id)
    view.page_panel.thumbnails.setCurrentRow(1)
    assert view.page == 2 and view.page_panel.ask_button.isEnabled()
    qtbot.mouseClick(view.page_panel.ask_button, Qt.MouseButton.LeftButton)
    session = real_window.session
    assert real_window.current_page() == "chat" and session.conversation_id == ""
    qtbot.waitUntil(lambda: len(session.draft_attachments) == 1, timeout=60_000)
    assert session.draft_attachments[0].name == "parts p2.png"
    assert "Attached page 2 of 2 from parts.pdf" in real_window.chat_view.notice.label.text()


def test_kill_9_mid_batch_restarts_the_engine_and_every_page_is_read_and_stored_once(
    qtbot, real_window, tmp_path: Path
) -> None:
    view: ExtractView = real_window.extract_view
    client: EngineClient = real_window.client
    read_quickly(view, "key_values")
    folder = tmp_path / "inbox"
    folder.mkdir()
    files = [
        write_pdf(folder / f"doc{i}.pdf", [[f"Item {i}"], [f"Total {i * 3}"]]) for i in range(10)
    ]
    read: collections.Counter[tuple[str, int]] = collections.Counter()

    def count(event: p.Event) -> None:
        if isinstance(event, p.PartialResult) and event.data.get("kind") == "page":
            read[(Path(event.data["provenance"]["file"]).name, event.data["page"])] += 1

    client.event_received.connect(count)
    first_pid = client.engine_pid()
    killed: list[int] = []

    def kill_on_third_page(_file_id: int, _page: int) -> None:
        if sum(read.values()) >= 3 and not killed:
            killed.append(client.engine_pid() or 0)
            os.kill(killed[0], signal.SIGKILL)

    view.session.page_stored.connect(kill_on_third_page)
    drop(view, [folder])  # a whole folder
    batch_id = view.session.batch_id
    assert batch_id is not None and len(view.session.files()) == 10
    qtbot.waitUntil(lambda: bool(killed), timeout=120_000)
    qtbot.waitUntil(lambda: client.is_ready() and client.engine_pid() != first_pid, timeout=120_000)
    assert "restarted" in view.banner.label.text()

    # Pause after a few more pages: the running file goes back to the queue, nothing is read.
    qtbot.waitUntil(lambda: sum(read.values()) >= 8, timeout=120_000)
    view.queue_panel.pause_button.click()
    qtbot.waitUntil(lambda: not view.session.is_running(), timeout=60_000)
    paused_at = sum(read.values())
    assert view.queue.batch(batch_id).status == BatchStatus.PAUSED  # type: ignore[union-attr]
    assert view.queue_panel.pause_button.text() == "Resume"
    qtbot.wait(1500)
    assert sum(read.values()) == paused_at
    view.queue_panel.pause_button.click()  # Resume

    qtbot.waitUntil(lambda: view.queue.batch(batch_id).status == BatchStatus.DONE, timeout=240_000)  # type: ignore[union-attr]
    stored = view.queue.files(batch_id)
    assert [f.status for f in stored] == [FileStatus.DONE] * 10
    assert all(view.queue.page_counts(f.id) == {1: 1, 2: 1} for f in stored)
    assert set(read) == {(f.name, n) for f in files for n in (1, 2)}
    assert set(read.values()) == {1}  # pages finished before the kill or the pause: not redone
    assert all(len(f.document["pages"]) == 2 for f in stored)  # type: ignore[index]
    assert view.queue_panel.title.text() == "Queue · 10 of 10 done"


# --- the window on the scripted engine ------------------------------------------------------------


def test_never_send_travels_on_the_extract_command_and_cancel_ends_the_batch(
    qtbot, make_window, command_log, tmp_path: Path
) -> None:
    window = make_window(cancel_grace_ms=0)
    view: ExtractView = window.extract_view
    window.show_page("extract")
    view.keep_local_box.setChecked(True)
    image = make_image(tmp_path / "receipt.png")
    other = make_image(tmp_path / "second.png", "#dc2626")
    view.add_paths([image, other])

    def extracts() -> list[px.Extract]:
        return [c for c in sent_commands(command_log) if isinstance(c, px.Extract)]

    qtbot.waitUntil(lambda: bool(extracts()), timeout=10_000)
    first = extracts()[0]
    assert first.never_send is True and first.model == FAKE_MODEL and first.path == str(image)
    assert first.schema == "invoice" and first.options.two_pass is True
    sent_kinds = [type(c).__name__ for c in sent_commands(command_log)]
    assert "ListSchemas" in sent_kinds and "InspectDocument" in sent_kinds
    assert view.never_send_box.isChecked() and view.queue_panel.tree.topLevelItem(0).text(
        0
    ).startswith("🔒")

    view.queue_panel.cancel_button.click()
    qtbot.waitUntil(
        lambda: p.Cancel(job_id=first.job_id) in sent_commands(command_log), timeout=10_000
    )
    statuses = [f.status for f in view.session.files()]
    assert statuses == [FileStatus.CANCELLED, FileStatus.CANCELLED]
    assert view.session.batch.status == BatchStatus.CANCELLED  # type: ignore[union-attr]
    assert len(extracts()) == 1  # nothing else was started


def test_the_adapter_chosen_for_chat_reads_documents_too(
    qtbot, make_window, command_log, tmp_path: Path
) -> None:
    """ "Use in chat and extraction" on the Fine-tune page: both send the adapter."""
    window = make_window()
    adapter = str(tmp_path / "run-7" / "adapter")
    window.finetune_page.session.use_adapter_requested.emit(FAKE_MODEL, adapter)
    assert "Chat and Extract now use the adapter run-7" in window.chat_view.notice.label.text()
    window.show_page("extract")
    window.extract_view.add_paths([make_image(tmp_path / "receipt.png")])

    def extracts() -> list[px.Extract]:
        return [c for c in sent_commands(command_log) if isinstance(c, px.Extract)]

    qtbot.waitUntil(lambda: bool(extracts()), timeout=10_000)
    assert (extracts()[0].model, extracts()[0].adapter) == (FAKE_MODEL, adapter)


def stored_batch(queue: ExtractionQueue, document: Path, result: dict, schema: dict) -> int:
    batch = queue.create_batch({"schema": "custom:Receipt", "schema_title": "Receipt",
                                "schema_json": schema, "two_pass": True, "options": {}})  # fmt: skip
    (file,) = queue.add_files(batch.id, [document])
    queue.store_page(file.id, result)
    queue.finish_file(file.id, {"file": str(document), "status": "ok", "data": result["data"],
                                "pages": [result], "sha256": file.sha256})  # fmt: skip
    return file.id


def test_problems_are_highlighted_with_reasons_and_an_edit_is_saved_and_checked_again(
    qtbot, make_window, command_log, tmp_path: Path
) -> None:
    schema = px.schema_from_fields(
        [px.FieldSpec(name="shop"), px.FieldSpec(name="total", type="number")], title="Receipt"
    )
    result = {
        "page": 1,
        "status": "ok",
        "data": {"shop": "Corner Café", "total": 12.5},
        "issues": [{"path": "/total", "check": "text_layer", "message": "12.5 is not in the "
                    "page's text.", "severity": "warning"}],  # fmt: skip
        "provenance": {"model": "tiny", "backend": "local", "quant": "nf4", "device": "cpu",
                       "two_pass": True, "attempts": 1, "sha256": "ab" * 32, "why": "local only",
                       "schema_name": "custom", "schema_version": "1", "prompt_version": "p"},
    }  # fmt: skip
    document = make_image(tmp_path / "receipt.png")
    file_id = stored_batch(
        ExtractionQueue(default_path(paths.data_dir())), document, result, schema
    )
    window = make_window()
    view: ExtractView = window.extract_view
    window.show_page("extract")
    view.select_file(file_id)

    total = view.editor.item_at("/total")
    assert total is not None and total.text(1) == "12.5"
    assert "not in the page's text" in total.toolTip(1)
    assert total.background(1).color().name() == "#fff4d6"  # a warning's colour
    assert view.status_badge.text() == "Valid" and "local only" in view.provenance.text()

    total.setText(1, "twelve")  # a person types a word where a number belongs
    stored = view.queue.page(file_id, 1)
    assert stored is not None and stored.has_edit and stored.data["total"] == "twelve"
    total = view.editor.item_at("/total")
    assert total is not None and "is not of type 'number', 'null'" in total.toolTip(1)
    assert total.background(1).color().name() == "#fde8e8"  # now an error
    assert view.status_badge.text() == "1 problem"

    total.setText(1, "21.50")
    edited = view.queue.file(file_id)
    assert edited is not None and edited.document["data"]["total"] == 21.5  # type: ignore[index]
    total = view.editor.item_at("/total")
    assert total is not None and "the model said 12.5" in total.toolTip(1)
    assert view.status_badge.text() == "Valid · edited"

    assert view.export_to("json", tmp_path / "edited.json")  # the export carries the edit
    qtbot.waitUntil(
        lambda: any(isinstance(c, px.ExportResults) for c in sent_commands(command_log)),
        timeout=10_000,
    )
    (export,) = [c for c in sent_commands(command_log) if isinstance(c, px.ExportResults)]
    assert export.format == "json" and export.documents[0]["data"]["total"] == 21.5

    # The model's answer back, and Ctrl+Z twice: the revert, then the second edit, taken back.
    assert view.revert_button.isVisible()
    view.revert_button.click()
    reverted = view.queue.file(file_id)
    assert reverted is not None and reverted.document["data"]["total"] == 12.5  # type: ignore[index]
    assert view.status_badge.text() == "Valid" and not view.revert_button.isVisible()
    view.editor.setFocus()
    qtbot.keyClick(view.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert view.queue.page(file_id, 1).data["total"] == 21.5  # type: ignore[union-attr]
    qtbot.keyClick(view.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    stored = view.queue.page(file_id, 1)
    assert stored is not None and stored.has_edit and stored.data["total"] == "twelve"
    assert view.editor.item_at("/total").text(1) == "twelve"  # type: ignore[union-attr]


def test_a_value_being_typed_survives_the_queue_moving_on_and_f2_on_a_name_edits_its_value(
    qtbot, make_window, tmp_path: Path
) -> None:
    schema = px.schema_from_fields([px.FieldSpec(name="total", type="number")], title="Receipt")
    result = {"page": 1, "status": "ok", "data": {"total": 12.5}, "issues": []}
    document = make_image(tmp_path / "receipt.png")
    file_id = stored_batch(
        ExtractionQueue(default_path(paths.data_dir())), document, result, schema
    )
    window = make_window()
    window.activateWindow()
    view: ExtractView = window.extract_view
    window.show_page("extract")
    view.select_file(file_id)
    total = view.editor.item_at("/total")
    assert total is not None
    view.editor.setCurrentItem(total, 0)  # the arrow keys move along the names
    view.editor.setFocus()
    qtbot.keyClick(view.editor, Qt.Key.Key_F2)
    editor = QApplication.focusWidget()
    assert isinstance(editor, QLineEdit) and editor.text() == "12.5"  # the value, not "total"
    editor.selectAll()
    qtbot.keyClicks(editor, "13")
    view.session.queue_changed.emit()  # another file of the batch starts or ends
    assert QApplication.focusWidget() is editor  # what is being typed is still there
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: view.queue.page(file_id, 1).has_edit)  # type: ignore[union-attr]
    stored = view.queue.page(file_id, 1)
    assert stored is not None and stored.has_edit and stored.data == {"total": 13}
    assert view.editor.item_at("/total").text(0) == "total"  # type: ignore[union-attr]


def test_a_batch_cut_off_by_a_crash_of_the_app_is_offered_and_resumes_with_its_stored_pages(
    qtbot, make_window, command_log, tmp_path: Path
) -> None:
    document = write_pdf(tmp_path / "long.pdf", [["one"], ["two"], ["three"]])
    queue = ExtractionQueue(default_path(paths.data_dir()))
    batch = queue.create_batch({"schema": "table", "schema_title": "Table", "schema_json": None,
                                "two_pass": False, "options": {}})  # fmt: skip
    (file,) = queue.add_files(batch.id, [document])
    queue.start_file(file.id)  # the app died while this file was being read…
    page_one = {"page": 1, "status": "ok", "data": {"title": None, "header": [], "rows": []},
                "issues": [], "kind": "page"}  # fmt: skip
    queue.store_page(file.id, page_one)  # …after its first page was stored
    queue.close()

    window = make_window()
    view: ExtractView = window.extract_view
    window.show_page("extract")
    assert view.session.batch_id == batch.id
    assert view.banner.isVisible() and view.banner.action.text() == "Resume"
    assert "1 document of this batch still to read" in view.banner.label.text()
    assert not [c for c in sent_commands(command_log) if isinstance(c, px.Extract)]  # waits

    view.banner.action.click()
    qtbot.waitUntil(
        lambda: any(isinstance(c, px.Extract) for c in sent_commands(command_log)), timeout=10_000
    )
    (resumed,) = [c for c in sent_commands(command_log) if isinstance(c, px.Extract)]
    assert resumed.path == str(document) and resumed.schema == "table"
    assert resumed.completed_pages == [page_one]  # page 1 is not read again
    assert resumed.options.two_pass is False


def test_the_records_table_edits_line_items_as_numbers_and_an_error_outranks_a_warning(
    qtbot,
) -> None:
    from desktop.views.json_editor import RecordsTable

    schema = {"type": "object", "properties": {"line_items": {"type": "array", "items": {
        "type": "object", "properties": {"description": {"type": ["string", "null"]},
                                         "amount": {"type": ["number", "null"]}}}}}}  # fmt: skip
    data = {
        "line_items": [
            {"description": "Bolt", "amount": 4.0},
            {"description": "Nut", "amount": 2.0},
        ]
    }
    issues = [
        {"path": "/line_items/0/amount", "message": "not in the text", "severity": "warning"},
        {"path": "/line_items/0/amount", "message": "10 × 0.4 is 4", "severity": "error"},
    ]
    table = RecordsTable()
    qtbot.addWidget(table)
    assert table.set_value(data, issues, schema)
    assert [table.horizontalHeaderItem(c).text() for c in range(2)] == ["description", "amount"]
    flagged = table.item(0, 1)
    assert flagged.background().color().name() == "#fde8e8"
    assert flagged.toolTip() == "not in the text\n10 × 0.4 is 4"
    with qtbot.waitSignal(table.data_edited) as edited:
        table.item(1, 1).setText("2,50")  # a decimal comma, as typed in much of Europe
    assert edited.args[0]["line_items"][1] == {"description": "Nut", "amount": 2.5}
    with qtbot.waitSignal(table.data_edited) as edited:
        table.item(0, 0).setText("12")  # a number typed into a text column stays text
    assert edited.args[0]["line_items"][0]["description"] == "12"
    assert data["line_items"][1]["amount"] == 2.0  # the caller's value is not changed in place
    assert not table.set_value({"title": "no records"})


def test_schemas_come_from_the_engine_a_built_one_is_checked_and_a_broken_file_is_refused(
    qtbot, tmp_path: Path
) -> None:
    client = EngineClient(log_path=tmp_path / "engine.log")
    view = ExtractView(client)
    qtbot.addWidget(view)
    client.start()
    try:
        with qtbot.waitSignal(view.session.schemas_changed, timeout=120_000):
            view.show()  # the first showing asks the engine for its built-in schemas
        titles = [view.schema_combo.itemText(i) for i in range(view.schema_combo.count())]
        assert {"Invoice", "Receipt", "Table", "Chart", "Form"} <= set(titles)
        assert view.session.schemas["chart"].schema["title"] == "Chart"  # type: ignore[index]

        fields = [px.FieldSpec(name="vendor"), px.FieldSpec(name="paid_on", type="date")]
        with qtbot.waitSignal(view.session.schema_checked, timeout=60_000) as checked:
            view.session.build_schema(fields, "Expenses")
        choice = checked.args[0]
        assert choice.inline and choice.title == "Expenses"
        assert list(choice.schema["properties"]) == ["vendor", "paid_on"]
        assert view.schema_combo.currentText() == "Expenses"
        assert view.session.settings()["schema_json"] == choice.schema

        broken = tmp_path / "broken.json"
        broken.write_text('{"type": "object", "properties": {"a": {"type": "strng"}}}')
        with qtbot.waitSignal(view.session.notice, timeout=60_000) as notice:
            view.session.check_schema_file(broken)
        assert "broken.json is not a valid JSON Schema" in notice.args[0]
        assert notice.args[1] == "error" and view.session.schema.title == "Expenses"
        assert view.banner.isVisible()
        with qtbot.waitSignal(view.session.schema_checked, timeout=60_000):
            view.session.build_schema(fields, "Expenses again")
        assert not view.banner.isVisible()  # a good schema now: the old error goes
    finally:
        client.stop()


def test_a_chart_result_offers_its_replot_beside_the_page(qtbot, make_window, tmp_path) -> None:
    chart = make_image(tmp_path / "chart.png", "#2563eb", (300, 200))
    replot = make_image(tmp_path / "chart-page1-replot.png", "#16a34a", (600, 200))
    data = {"chart_type": "bar", "title": None, "x_axis": None, "y_axis": None,
            "series": [{"name": "A", "points": [{"x": "Q1", "y": 3}]}]}  # fmt: skip
    result = {"page": 1, "status": "ok", "data": data, "issues": [], "replot": str(replot)}
    file_id = stored_batch(ExtractionQueue(default_path(paths.data_dir())), chart, result, {})
    window = make_window()
    view: ExtractView = window.extract_view
    window.show_page("extract")
    view.select_file(file_id)
    panel = view.page_panel
    assert panel.replot_button.isVisible() and panel.replot_button.isEnabled()
    assert panel.page_button.isChecked()
    panel.replot_button.click()
    assert panel._pixmap.width() == 600  # the re-plot, not the page
    assert view.table.set_value(data) is False  # a chart has no record list: Fields only


def test_quitting_mid_batch_asks_first_keeps_the_file_queued_and_offers_the_batch_again(
    qtbot, make_window, command_log, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = make_window()
    view: ExtractView = window.extract_view
    window.show_page("extract")
    image = make_image(tmp_path / "receipt.png")
    view.add_paths([image, make_image(tmp_path / "second.png", "#dc2626")])
    qtbot.waitUntil(
        lambda: any(isinstance(c, px.Extract) for c in sent_commands(command_log)), timeout=10_000
    )
    (reading, waiting) = view.session.files()

    # Asked first: No keeps the window and the batch going; Yes quits.
    asked: list[str] = []
    answers = iter([QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes])
    monkeypatch.setattr(
        QMessageBox, "question", lambda _w, _t, text, *_a: (asked.append(text), next(answers))[1]
    )
    monkeypatch.setattr(window, "ask_before_quitting", True)
    assert not window.close() and window.isVisible() and view.session.is_running()
    assert "reading documents on the Extract page" in asked[0]
    # What quitting does: closeEvent, aboutToQuit and main()'s finally each stop the engine.
    assert window.close() and len(asked) == 2
    window.client.stop()
    window.client.stop()

    stopped = view.queue.file(reading.id)
    assert stopped is not None and stopped.status == FileStatus.QUEUED and stopped.error == ""
    assert [c.path for c in sent_commands(command_log) if isinstance(c, px.Extract)] == [str(image)]
    assert view.session.batch.status == BatchStatus.ACTIVE  # type: ignore[union-attr]

    reopened = make_window()
    view = reopened.extract_view
    reopened.show_page("extract")
    assert view.session.batch.status == BatchStatus.PAUSED  # type: ignore[union-attr]
    assert view.banner.isVisible() and view.banner.action.text() == "Resume"
    assert "2 documents of this batch still to read" in view.banner.label.text()


def test_an_edit_to_a_multi_page_document_reaches_its_data_after_the_file_was_moved(
    qtbot, tmp_path: Path
) -> None:
    schema = px.schema_from_fields([px.FieldSpec(name="shop")], title="Receipt")
    document = write_pdf(tmp_path / "receipt.pdf", [["Corner Café"], ["Thank you"]])
    queue = ExtractionQueue(default_path(paths.data_dir()))
    batch = queue.create_batch(
        {
            "schema": "custom:Receipt",
            "schema_title": "Receipt",
            "schema_json": schema,
            "two_pass": False,
            "options": {},
        }
    )
    (file,) = queue.add_files(batch.id, [document])
    pages = [
        {"page": 1, "status": "ok", "data": {"shop": "Corner"}, "issues": []},
        {"page": 2, "status": "ok", "data": {"shop": None}, "issues": []},
    ]
    for page in pages:
        queue.store_page(file.id, page)
    queue.finish_file(
        file.id,
        {
            "file": str(document),
            "status": "ok",
            "data": {"shop": "Corner"},
            "pages": pages,
            "sha256": file.sha256,
            "page_count": 2,
            "format": "PDF",
        },
    )
    document.rename(tmp_path / "filed-away.pdf")  # filed out of Downloads after it was read

    client = EngineClient(log_path=tmp_path / "engine.log")
    view = ExtractView(client, queue=queue)
    qtbot.addWidget(view)
    client.start()
    try:
        qtbot.waitUntil(client.is_ready, timeout=60_000)
        view.select_file(file.id)
        with qtbot.waitSignal(view.session.document_changed, timeout=60_000):
            view.editor.item_at("/shop").setText(1, "EDITED")
        edited = view.queue.file(file.id)
        assert edited is not None and edited.document is not None
        assert edited.document["data"] == {"shop": "EDITED"}  # what CSV and Markdown are made of
        assert edited.document["pages"][0]["data"] == {"shop": "EDITED"}
        assert (edited.document["page_count"], edited.document["format"]) == (2, "PDF")
        assert not view.banner.isVisible()
    finally:
        client.stop()


def test_cancelling_a_batch_keeps_the_pages_already_read_in_its_exports(
    qtbot, real_window, tmp_path: Path
) -> None:
    view: ExtractView = real_window.extract_view
    read_quickly(view, "key_values")
    document = write_pdf(tmp_path / "long.pdf", [[f"Page {n}", "Total 12.50"] for n in range(12)])
    view.add_paths([document])
    (file,) = view.session.files()
    qtbot.waitUntil(lambda: view.queue.file(file.id).pages_done >= 2, timeout=120_000)  # type: ignore[union-attr]
    view.queue_panel.cancel_button.click()
    qtbot.waitUntil(lambda: not view.session.is_running(), timeout=60_000)

    cancelled = view.queue.file(file.id)
    assert cancelled is not None and cancelled.status == FileStatus.CANCELLED
    assert cancelled.document is not None and cancelled.document["status"] != "ok"
    read = [page.page for page in view.queue.pages(file.id)]
    assert 2 <= len(read) < 12
    out = tmp_path / "cancelled.json"
    with qtbot.waitSignal(view.session.export_finished, timeout=60_000) as finished:
        assert view.export_to("json", out)
    assert finished.args == [str(out), ""]
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert [page["page"] for page in exported["pages"]] == read


def test_read_again_sends_the_pages_without_a_valid_answer_to_the_model_again(
    qtbot, make_window, command_log, tmp_path: Path
) -> None:
    document = write_pdf(tmp_path / "two.pdf", [["one"], ["two"]])
    changed = make_image(tmp_path / "scan.png")
    queue = ExtractionQueue(default_path(paths.data_dir()))
    batch = queue.create_batch({"schema": "table", "schema_title": "Table", "schema_json": None,
                                "two_pass": False, "options": {}})  # fmt: skip
    read, rescanned = queue.add_files(batch.id, [document, changed])
    good = {"page": 1, "status": "ok", "data": {"title": "one"}, "issues": [], "kind": "page"}
    cut_off = {
        "page": 2,
        "status": "failed",
        "error": "ran past the 16-token limit",
        "issues": [],
        "kind": "page",
    }
    for file_id, pages in ((read.id, [good, cut_off]), (rescanned.id, [good])):
        for result in pages:
            queue.store_page(file_id, result)
        queue.finish_file(file_id, {"file": "x", "status": "partial", "pages": pages})
    make_image(changed, "#dc2626")  # scanned again since it was read
    queue.close()

    window = make_window()
    view: ExtractView = window.extract_view
    window.show_page("extract")
    view.session.retry_file(read.id)  # the queue's context menu: "Read again"

    def extracts() -> list[px.Extract]:
        return [c for c in sent_commands(command_log) if isinstance(c, px.Extract)]

    qtbot.waitUntil(lambda: bool(extracts()), timeout=10_000)
    (again,) = extracts()
    assert again.path == str(document) and again.model == FAKE_MODEL
    assert again.completed_pages == [good]  # page 2 is read again, page 1 is not
    assert view.queue.page(read.id, 2) is None

    view.session.retry_file(rescanned.id)  # waits behind the file being read
    waiting = view.queue.file(rescanned.id)
    assert waiting is not None and waiting.status == FileStatus.QUEUED
    assert view.queue.completed_pages(rescanned.id) == []  # it changed: every page is read again


def test_every_page_of_a_long_document_has_a_thumbnail_and_one_not_rendered_ahead_renders_when_opened(
    qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("desktop.state.extraction.PREVIEW_PAGES", 3)  # 40 in the app
    document = write_pdf(tmp_path / "long.pdf", [[f"Page {n}"] for n in range(1, 15)])
    queue = ExtractionQueue(default_path(paths.data_dir()))
    batch = queue.create_batch({"schema": "table", "schema_title": "Table", "schema_json": None,
                                "two_pass": False, "options": {}})  # fmt: skip
    (file,) = queue.add_files(batch.id, [document])
    client = EngineClient(log_path=tmp_path / "engine.log")
    view = ExtractView(client, queue=queue)
    qtbot.addWidget(view)
    view.resize(1280, 800)
    view.show()
    client.start()
    try:
        view.select_file(file.id)
        strip = view.page_panel.thumbnails
        qtbot.waitUntil(lambda: len(view.session.previews.get(file.id, {})) == 3, timeout=60_000)
        assert strip.count() == 14  # the pages not rendered ahead can be opened too

        strip.setCurrentRow(11)  # page 12
        assert view.page == 12 and strip.currentRow() == 11
        qtbot.waitUntil(lambda: 12 in view.session.previews[file.id], timeout=60_000)
        assert not view.page_panel._pixmap.isNull()  # the page itself, not "Rendering…"
        assert strip.currentRow() == 11
        assert "page 12 of 14" in view.page_panel.title.text()
    finally:
        client.stop()


def test_a_long_file_name_is_shortened_instead_of_widening_the_window(
    qtbot, make_window, tmp_path: Path
) -> None:
    name = "Quarterly report for the northern region final version approved " * 2 + ".png"
    document = make_image(tmp_path / name)
    result = {"page": 1, "status": "ok", "data": {"shop": "Corner"}, "issues": []}
    file_id = stored_batch(ExtractionQueue(default_path(paths.data_dir())), document, result, {})
    window = make_window()
    window.resize(1280, 800)
    view: ExtractView = window.extract_view
    window.show_page("extract")
    qtbot.waitUntil(lambda: window.width() == 1280)
    view.select_file(file_id)
    QApplication.processEvents()
    assert window.width() == 1280 and window.minimumSizeHint().width() < 1280
    for heading in (view.result_title, view.page_panel.title):
        assert heading.width() < 1280 and name in heading.toolTip()
    assert view.result_title.text() == f"{name} · page 1"  # the whole name, shown elided
    assert not view.page_panel.replot_button.isVisible()  # not a chart: room for the name


def test_an_error_notice_is_shown_in_the_error_colour_until_the_user_moves_on_or_dismisses_it(
    qtbot, make_window, tmp_path: Path
) -> None:
    from PySide6.QtWidgets import QApplication

    from desktop.app import load_theme

    window = make_window()
    view: ExtractView = window.extract_view
    window.show_page("extract")
    app = QApplication.instance()
    load_theme(app)  # the colours are the app's theme's
    try:
        view.session.notice.emit("Schema file broken.json is not valid JSON.", "error")
        banner = view.banner
        assert banner.isVisible() and banner.property("level") == "error"
        picture = banner.grab().toImage()
        assert picture.pixelColor(6, banner.height() // 2).name() == "#fef2f2"
        assert banner.label.palette().color(banner.label.foregroundRole()).name() == "#991b1b"
    finally:
        app.setStyleSheet("")

    view.add_paths([make_image(tmp_path / "receipt.png")])  # the next batch: the error is old news
    assert not banner.isVisible()
    view.session.notice.emit("Schema file broken.json is not valid JSON.", "error")
    view.schema_combo.activated.emit(view.schema_combo.findData("table"))  # another schema
    assert not banner.isVisible()
    view.session.notice.emit("Export failed: the disk is full.", "error")
    banner.close_button.click()  # or dismissed by hand
    assert not banner.isVisible()


def test_quitting_while_the_real_engine_reads_a_file_neither_sends_it_again_nor_counts_a_death(
    qtbot, real_window, tmp_path: Path
) -> None:
    view: ExtractView = real_window.extract_view
    read_quickly(view, "key_values")
    document = write_pdf(tmp_path / "long.pdf", [[f"Page {n}"] for n in range(12)])
    view.add_paths([document])
    (file,) = view.session.files()
    qtbot.waitUntil(lambda: view.queue.file(file.id).pages_done >= 1, timeout=120_000)  # type: ignore[union-attr]
    real_window.close()  # the engine cancels the job as it shuts down…
    real_window.client.stop()  # …and aboutToQuit and main() stop it twice more
    real_window.client.stop()
    stopped = view.queue.file(file.id)
    assert stopped is not None and stopped.status == FileStatus.QUEUED
    assert stopped.attempts == 1  # started once, not again for every stop
    assert view.session.batch.status == BatchStatus.ACTIVE  # type: ignore[union-attr]
