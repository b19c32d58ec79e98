"""Render the Extract page offscreen with a small batch and save it as a PNG.

    python scripts/screenshot_extract.py OUT.png

Uses a throw-away data folder. The documents come from the evaluation set generator
(bench/eval_data): an invoice, a receipt and a chart. The real engine (no model needed) renders
the page previews and thumbnails. The results shown are stored example answers, as a model
would give them: each document's ground truth, with one invoice amount misread so that the
engine's own arithmetic check flags it, so the picture shows a highlighted problem.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["VISIONDESK_DATA_DIR"] = tempfile.mkdtemp(prefix="visiondesk-shot-")

from PySide6.QtCore import QCoreApplication, QSettings  # noqa: E402

from bench.eval_data import generate  # noqa: E402
from desktop import paths  # noqa: E402
from desktop.app import create_application  # noqa: E402
from desktop.engine_client import EngineClient  # noqa: E402
from desktop.extraction_queue import ExtractionQueue, default_path  # noqa: E402
from desktop.main_window import MainWindow  # noqa: E402
from desktop.state import ModelCatalog, ModelChoice  # noqa: E402
from desktop.storage import Storage  # noqa: E402

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


def page_result(path: Path, sha256: str, schema: str, data: dict, text: str | None) -> dict:
    """A page result as the engine sends it, with the engine's own checks run on ``data``."""
    import msgspec

    from engine.extraction.checks import run_checks

    issues = [msgspec.to_builtins(issue) for issue in run_checks(data, text)]
    return {
        "page": 1,
        "status": "ok",
        "data": data,
        "issues": issues,
        "kind": "page",
        "provenance": {
            "file": str(path), "sha256": sha256, "page": 1, "backend": "local", "model": MODEL,
            "quant": "nf4", "device": "cuda", "prompt_version": "51ea6fbd0af4",
            "schema_name": schema, "schema_version": "4a25545017e7", "two_pass": True,
            "attempts": 1, "engine_version": "0.1.0", "dpi": 186.0, "image_size": [1086, 1536],
            "timings": {"total_s": 4.2}, "why": "local only",
        },
    }  # fmt: skip


def fill_queue(folder: Path) -> None:
    """A batch of three: the invoice (one misread amount), the receipt, and a chart to read."""
    (invoice,) = generate(folder, seed=5, counts={"invoice": 1})
    (receipt,) = generate(folder, seed=4, counts={"receipt": 1})
    (chart,) = generate(folder, seed=7, counts={"chart": 1})
    queue = ExtractionQueue(default_path(paths.data_dir()))
    batch = queue.create_batch(
        {
            "schema": "invoice",
            "schema_title": "Invoice",
            "schema_json": None,
            "two_pass": True,
            "options": {},
        },  # fmt: skip
        name="March invoices",
    )
    files = queue.add_files(batch.id, [folder / i.file for i in (invoice, receipt, chart)])
    answer = copy.deepcopy(invoice.truth)
    answer["line_items"][0]["amount"] = round(answer["line_items"][0]["amount"] + 10, 2)
    text = _text_layer(folder / invoice.file)
    for file, schema, data, layer in (
        (files[0], "invoice", answer, text),
        (files[1], "receipt", receipt.truth, None),
    ):
        result = page_result(file.path, file.sha256, schema, data, layer)
        queue.store_page(file.id, result)
        status = "ok"
        queue.finish_file(file.id, {"file": str(file.path), "sha256": file.sha256,
                                    "status": status, "data": data, "pages": [result]})  # fmt: skip
    queue.close()


def _text_layer(pdf: Path) -> str:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf))
    try:
        return str(document[0].get_textpage().get_text_range())
    finally:
        document.close()


def wait_until(condition, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the engine did not answer in time")
        QCoreApplication.processEvents()
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    out = Path(argv[0])
    fill_queue(paths.data_dir() / "documents")
    app = create_application(["screenshot"])
    settings = QSettings(str(paths.data_dir() / "settings.ini"), QSettings.Format.IniFormat)
    storage = Storage(paths.database_path())
    client = EngineClient()
    window = MainWindow(storage, client, ModelCatalog(settings), settings=settings)
    window.resize(1440, 900)
    window.set_model_choice(ModelChoice(MODEL, "nf4", "cuda"))
    window.show()
    window.show_page("extract")
    client.start()
    wait_until(client.is_ready)
    view = window.extract_view
    first = view.session.files()[0]
    view.queue_panel.select(first.id)
    wait_until(lambda: first.id in view.session.previews)
    wait_until(lambda: view.session.schema_for() is not None)
    view.select_file(first.id)
    for _ in range(30):  # let the layout settle
        QCoreApplication.processEvents()
        time.sleep(0.01)
    window.grab().save(str(out))
    print(out)
    window.close()
    storage.close()
    app.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
