"""Render the main window offscreen with a filled-in conversation and save it as a PNG.

    python scripts/screenshot.py OUT.png [EDITING.png]

The second picture, if asked for, shows the question taken back into the composer to be edited.

Uses a throw-away data folder and the scripted fake engine (tests/desktop/fake_engine.py), so the
answer really streams through EngineClient and ChatSession; nothing of the user's is touched.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["VISIONDESK_DATA_DIR"] = tempfile.mkdtemp(prefix="visiondesk-shot-")

from PySide6.QtCore import QCoreApplication, QPointF, QRectF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QColor, QFont, QImage, QLinearGradient, QPainter, QPen  # noqa: E402

from desktop import paths  # noqa: E402
from desktop.app import create_application  # noqa: E402
from desktop.engine_client import EngineClient  # noqa: E402
from desktop.main_window import MainWindow  # noqa: E402
from desktop.state import ModelCatalog, ModelChoice  # noqa: E402
from desktop.storage import Storage  # noqa: E402

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
QUESTION = "What does this chart show? Give me the numbers as a Python dict."
ANSWER = """The chart shows **quarterly revenue** for 2024, rising every quarter:

- Q1 was the weakest quarter, at about *1.2 M*
- Q4 almost doubled it, at about *2.3 M*

```python
revenue = {"Q1": 1.2, "Q2": 1.6, "Q3": 1.9, "Q4": 2.3}  # millions
growth = revenue["Q4"] / revenue["Q1"] - 1
print(f"Growth over the year: {growth:.0%}")
```

Overall growth is about `92%` over the year."""


def chart_image(path: Path) -> Path:
    """A small bar chart drawn with QPainter (no PIL in the desktop)."""
    image = QImage(640, 420, QImage.Format.Format_RGB32)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    gradient = QLinearGradient(0, 0, 0, 420)
    gradient.setColorAt(0, QColor("#ffffff"))
    gradient.setColorAt(1, QColor("#eef2f9"))
    painter.fillRect(image.rect(), gradient)
    painter.setPen(QColor("#1f2937"))
    painter.setFont(QFont("DejaVu Sans", 20, QFont.Weight.Bold))
    painter.drawText(QRectF(0, 18, 640, 40), Qt.AlignmentFlag.AlignCenter, "Revenue 2024")
    painter.setPen(QPen(QColor("#9ca3af"), 2))
    painter.drawLine(QPointF(70, 360), QPointF(600, 360))
    colors = ["#93c5fd", "#60a5fa", "#3b82f6", "#2563eb"]
    for index, (label, value) in enumerate(
        zip(("Q1", "Q2", "Q3", "Q4"), (1.2, 1.6, 1.9, 2.3), strict=True)
    ):
        x, height = 100 + index * 125, value * 120
        painter.fillRect(QRectF(x, 360 - height, 80, height), QColor(colors[index]))
        painter.setPen(QColor("#374151"))
        painter.setFont(QFont("DejaVu Sans", 13))
        painter.drawText(QRectF(x, 366, 80, 30), Qt.AlignmentFlag.AlignCenter, label)
        painter.drawText(
            QRectF(x, 330 - height, 80, 28), Qt.AlignmentFlag.AlignCenter, f"{value} M"
        )
    painter.end()
    image.save(str(path))
    return path


def wait_until(condition, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the fake engine did not finish in time")
        QCoreApplication.processEvents()
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__)
        return 2
    out = Path(argv[0])
    app = create_application(["screenshot"])
    settings = QSettings(str(paths.data_dir() / "settings.ini"), QSettings.Format.IniFormat)
    storage = Storage(paths.database_path())
    earlier = storage.create_conversation("Receipt from the hardware store")
    storage.add_message(earlier.id, "user", "What is the total on this receipt?")
    storage.add_message(earlier.id, "assistant", "The total is **€ 48.90**, paid by card.")
    storage.create_conversation("Is this mushroom edible?")
    fake_engine = ROOT / "tests" / "desktop" / "fake_engine.py"
    command = [
        sys.executable,
        str(fake_engine),
        "--reply",
        ANSWER,
        "--backend",
        "local",
        "--gpu-name",
        "NVIDIA GeForce RTX 4090",
        "--delay",
        "0.002",
    ]
    client = EngineClient(command)
    window = MainWindow(storage, client, ModelCatalog(settings), settings=settings)
    window.resize(1280, 860)
    window.set_model_choice(ModelChoice(MODEL, "nf4", "cuda"))
    window.show()
    client.start()
    wait_until(client.is_ready)
    window.session.new_conversation()
    window.send_message(QUESTION, [chart_image(paths.cache_dir() / "revenue-chart.png")])
    wait_until(lambda: not window.session.busy)
    wait_until(lambda: window.engine_status.loaded is not None)
    for _ in range(20):  # let the layout and the scroll-to-bottom settle
        QCoreApplication.processEvents()
        time.sleep(0.01)
    window.grab().save(str(out))
    print(out)
    if len(argv) == 2:
        window.edit_message(window.session.messages[0].id)
        for _ in range(20):
            QCoreApplication.processEvents()
            time.sleep(0.01)
        window.grab().save(argv[1])
        print(argv[1])
    window.close()
    storage.close()
    app.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
