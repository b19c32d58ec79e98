"""Render the Search view offscreen after a real index and query, and save it as a PNG.

    python scripts/screenshot_search.py OUT.png

Uses a throw-away data folder, a folder of generated sample images (photos, receipts, charts,
screenshots, whiteboards, documents), a tiny random-weight CLIP built on the spot and the real
engine process: indexing, zero-shot tags, the query and the thumbnails all go through it.
The model's weights are random, so the order of the results is too; the screen is real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
WORK = Path(tempfile.mkdtemp(prefix="visiondesk-search-shot-"))
os.environ["VISIONDESK_DATA_DIR"] = str(WORK / "data")

from PySide6.QtCore import QCoreApplication, Qt  # noqa: E402
from PySide6.QtGui import QPixmap  # noqa: E402
from PySide6.QtWidgets import QMainWindow  # noqa: E402

from desktop import paths  # noqa: E402
from desktop.app import create_application  # noqa: E402
from desktop.engine_client import EngineClient  # noqa: E402
from desktop.views.search import SearchView  # noqa: E402
from engine.protocol import search as ps  # noqa: E402
from engine.search.samples import write_samples  # noqa: E402

QUERY = "whiteboard with a bar chart"
LABELS = ["receipt", "chart", "screenshot", "photo"]


def wait_until(condition: Callable[[], bool], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the engine did not finish in time")
        QCoreApplication.processEvents()
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    out = Path(argv[0]).resolve()
    model = WORK / "clip-demo"
    subprocess.run(
        [sys.executable, "-m", "engine.testing", "make-demo", str(model), "--family", "clip"],
        check=True,
        capture_output=True,
    )
    photos = WORK / "Pictures" / "2024"
    write_samples(photos, 72, size=(800, 600))
    app = create_application(["screenshot"])
    client = EngineClient(log_path=WORK / "engine.log")
    window = QMainWindow()
    view = SearchView(client, paths.data_dir())
    window.setCentralWidget(view)
    window.setWindowTitle("VisionDesk — Search")
    window.resize(1280, 820)
    window.show()
    client.start()
    wait_until(client.is_ready)
    view.set_model(str(model))
    finished: list[str] = []
    view.index_finished.connect(lambda reason, result: finished.append(reason))
    view.index_folders([str(photos)])
    wait_until(lambda: bool(finished))
    tagged: list[bool] = []
    tag = ps.TagImages(job_id="tags", data_dir=str(paths.data_dir()), labels=LABELS)
    client.event_received.connect(
        lambda event: (
            tagged.append(True)
            if getattr(event, "job_id", "") == "tags" and type(event).__name__ == "Finished"
            else None
        )
    )
    client.send(tag)
    wait_until(lambda: bool(tagged))
    view.refresh_status()
    wait_until(lambda: view.tag_box.count() > 1)
    shown: list[int] = []
    view.results_shown.connect(shown.append)
    view.query_edit.setText(QUERY)
    view.search()
    wait_until(lambda: bool(shown))
    visible = [view.results.index(row) for row in range(min(18, len(view.results.hits)))]
    wait_until(
        lambda: all(
            isinstance(view.results.data(i, Qt.ItemDataRole.DecorationRole), QPixmap)
            for i in visible
        )
    )
    view.grid.setCurrentIndex(view.results.index(1))
    for _ in range(30):  # let the layout settle
        QCoreApplication.processEvents()
        time.sleep(0.01)
    window.grab().save(str(out))
    print(out)
    client.stop()
    window.close()
    app.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
