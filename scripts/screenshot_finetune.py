"""Render the fine-tuning wizard's data and training pages offscreen and save them as PNGs.

    python scripts/screenshot_finetune.py OUT_DIR

Runs the real engine with a tiny random model (built offline) on generated pictures in a
throw-away data folder: the data page shows the checks and fixes, the training page a real
(short) run with its loss curves. Writes ``finetune-data.png`` and ``finetune-train.png``.
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
os.environ.setdefault("OMP_NUM_THREADS", "1")

from PySide6.QtCore import QCoreApplication  # noqa: E402
from PySide6.QtGui import QColor, QImage, QPainter  # noqa: E402

from desktop.app import create_application  # noqa: E402
from desktop.engine_client import EngineClient  # noqa: E402
from desktop.state.finetune import FinetuneSession  # noqa: E402
from desktop.views.finetune_wizard import FinetuneWizard  # noqa: E402

PICTURES = {
    "invoice-acme": ("#1d4ed8", "Invoice from ACME Tools, total 1,240.00 EUR, due 12 March."),
    "invoice-baker": ("#0f766e", "Invoice from Baker & Sons, total 310.50 EUR, due 2 April."),
    "receipt-cafe": ("#b45309", "Receipt from Café Lumen, 2 coffees, 7.80 EUR."),
    "form-claim": ("#7c3aed", "Insurance claim form, policy 88-1204, signed."),
    "invoice-delta": ("#be123c", "Invoice from Delta Print, total 96.00 EUR, due 30 May."),
    "receipt-fuel": ("#4d7c0f", "Receipt from Fuelstop, 41.2 litres, 72.10 EUR."),
    "form-leave": ("#0369a1", "Leave request form for 3 days in June."),
    "invoice-echo": ("#a16207", "Invoice from Echo Audio, total 2,100.00 EUR, due 1 July."),
    "scan-blank": ("#334155", ""),
}


def document(path: Path, colour: str, size: tuple[int, int] = (180, 240)) -> None:
    """A page-like picture: a coloured header bar and grey text lines."""
    image = QImage(*size, QImage.Format.Format_RGB32)
    image.fill(QColor("#ffffff"))
    painter = QPainter(image)
    painter.fillRect(0, 0, size[0], 36, QColor(colour))
    for line in range(8):
        painter.fillRect(16, 56 + line * 20, size[0] - 32 - (line % 3) * 30, 8, QColor("#cbd5e1"))
    painter.end()
    image.save(str(path))


def sideways(path: Path) -> None:
    """A phone photo stored on its side with an EXIF orientation tag (fixed automatically)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (240, 180), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 36, 180), fill=(21, 128, 61))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(path, exif=exif)


def wait(condition, seconds: float = 300) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        QCoreApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() > deadline:
            raise TimeoutError("the engine did not answer in time")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    out.mkdir(parents=True, exist_ok=True)
    from engine.testing import tiny_model_path

    model = str(tiny_model_path("llava"))
    data = Path(os.environ["VISIONDESK_DATA_DIR"]) / "my-documents"
    data.mkdir(parents=True)
    for name, (colour, caption) in PICTURES.items():
        document(data / f"{name}.png", colour)
        (data / f"{name}.txt").write_text(caption, encoding="utf-8")
    sideways(data / "photo-receipt.jpg")
    (data / "photo-receipt.txt").write_text(
        "Receipt from Bakery Nord, 3 rolls, 2.40 EUR.", encoding="utf-8"
    )
    document(data / "invoice-acme-copy.png", PICTURES["invoice-acme"][0])
    (data / "invoice-acme-copy.txt").write_text(PICTURES["invoice-acme"][1], encoding="utf-8")

    app = create_application([])
    client = EngineClient()
    client.start()
    wait(client.is_ready)
    session = FinetuneSession(client)
    wizard = FinetuneWizard(session, models=[model])
    wizard.resize(980, 760)
    wizard.show()
    wizard.next()
    page = wizard.page_widget(FinetuneWizard.DATA)
    page.folder.setText(str(data))
    page.folder.editingFinished.emit()
    wait(lambda: session.report is not None and session.state == "idle")
    for _ in range(20):
        app.processEvents()
    wizard.grab().save(str(out / "finetune-data.png"))

    page.fix(["empty_text", "duplicate"])
    wait(lambda: session.state == "idle" and not any(i.blocking for i in session.report.issues))
    wizard.next()
    wizard.page_widget(FinetuneWizard.RECIPE).epochs.setValue(12)
    wizard.next()
    wait(lambda: session.plan is not None)
    wizard.next()
    train = wizard.page_widget(FinetuneWizard.TRAIN)
    train.start_button.click()
    wait(lambda: len(session.metrics) >= 24 and len(session.evals) >= 3)
    for _ in range(20):
        app.processEvents()
    wizard.grab().save(str(out / "finetune-train.png"))
    session.stop()
    wait(lambda: session.state in ("stopped", "done", "failed"))
    client.stop()
    print(out / "finetune-data.png")
    print(out / "finetune-train.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
