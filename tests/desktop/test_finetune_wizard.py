"""The fine-tuning wizard end to end with the real engine, a tiny model and generated pictures:
data check and fix, plan, train with pause / close / reopen / resume, compare, use and export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QLabel, QPushButton, QWizard

from desktop.engine_client import EngineClient
from desktop.state.finetune import FinetuneSession
from desktop.views.finetune_wizard import FinetuneWizard
from engine.protocol import finetune as pf
from tests.desktop.helpers import make_image

pytestmark = pytest.mark.slow
COLOURS = {
    "red": "#dc2626",
    "green": "#16a34a",
    "blue": "#2563eb",
    "yellow": "#eab308",
    "purple": "#9333ea",
    "orange": "#ea580c",
    "black": "#111111",
    "white": "#f5f5f5",
}
WAIT = 180_000


def make_pictures(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, colour in COLOURS.items():
        make_image(folder / f"{name}.png", colour, (64, 48))
        (folder / f"{name}.txt").write_text(f"A plain {name} square.", encoding="utf-8")
    (folder / "white.txt").write_text("   ", encoding="utf-8")  # one row without an answer
    return folder


@pytest.fixture
def engine(qtbot, tiny_cache: Path, tmp_path: Path) -> Iterator[EngineClient]:
    client = EngineClient(log_path=tmp_path / "engine.log", handshake_timeout_ms=120_000)
    client.start()
    qtbot.waitUntil(client.is_ready, timeout=WAIT)
    yield client
    client.stop()


def open_wizard(qtbot, session: FinetuneSession, model: str) -> FinetuneWizard:
    wizard = FinetuneWizard(session, models=[model])
    qtbot.addWidget(wizard)
    wizard.show()
    return wizard


def test_the_wizard_trains_an_adapter_from_pictures_to_chat(
    qtbot, engine: EngineClient, tiny_model, tmp_path: Path
) -> None:
    model = str(tiny_model("llava"))
    session = FinetuneSession(engine)
    wizard = open_wizard(qtbot, session, model)

    # 1. base model
    assert wizard.currentId() == FinetuneWizard.MODEL and session.model == model
    wizard.next()

    # 2. data: the empty answer blocks the way until its fix is applied
    page = wizard.page_widget(FinetuneWizard.DATA)
    page.folder.setText(str(make_pictures(tmp_path / "pictures")))
    page.folder.editingFinished.emit()
    qtbot.waitUntil(lambda: session.report is not None and session.state == "idle", timeout=WAIT)
    assert len(session.report.rows) == 8 and page.grid.count() == 8
    assert "8 pictures with captions" in page.summary.text()
    assert not page.isComplete()  # a row has no answer
    fix = page.issues.findChild(QPushButton, "fix_empty_text")
    assert fix is not None and fix.text() == "Leave out"
    fix.click()
    qtbot.waitUntil(lambda: session.state == "idle" and len(session.report.rows) == 7, timeout=WAIT)
    assert page.isComplete() and page.grid.count() == 7
    assert "A plain red square." in [page.grid.item(i).text() for i in range(7)]
    wizard.next()

    # 3. recipe: the recommended one, a few passes over the data
    page = wizard.page_widget(FinetuneWizard.RECIPE)
    assert page.findChild(QPushButton) is None  # choices are radio buttons, values spin boxes
    page.epochs.setValue(30)
    wizard.next()
    assert session.settings.epochs == 30 and session.settings.recipe == "language"

    # 4. plan: every value explained, memory checked with a trial step
    page = wizard.page_widget(FinetuneWizard.PLAN)
    qtbot.waitUntil(lambda: session.plan is not None, timeout=WAIT)
    plan = session.plan
    assert plan.trial is not None and plan.trial.ok and plan.total_steps == 30 * 4
    assert page.table.rowCount() == len(plan.settings)
    reasons = [page.table.item(row, 2).text() for row in range(page.table.rowCount())]
    assert any(reason.startswith("set by you") for reason in reasons) and all(reasons)
    assert not any("(yours)" in reason for reason in reasons)  # said once, not twice
    assert "A plain" in page.preview.toPlainText() and "fits" in page.summary.text()
    wizard.next()

    # 5. train: close the wizard while it trains, reopen it, pause, resume to the end
    page = wizard.page_widget(FinetuneWizard.TRAIN)
    page.out.setText(str(tmp_path / "run"))
    page.start_button.click()
    qtbot.waitUntil(lambda: len(session.metrics) >= 3, timeout=WAIT)
    assert "Step" in page.status.text() and page.plot.series["train"].points
    wizard.close()  # training goes on without a window

    wizard = open_wizard(qtbot, session, model)  # reopened: straight back to the training page
    assert wizard.currentId() == FinetuneWizard.TRAIN
    page = wizard.page_widget(FinetuneWizard.TRAIN)
    assert len(page.plot.series["train"].points) == len(session.metrics) >= 3
    seen = len(session.metrics)
    qtbot.waitUntil(
        lambda: len(page.plot.series["train"].points) > seen, timeout=WAIT
    )  # still live
    page.pause_button.click()
    qtbot.waitUntil(lambda: session.state == "paused", timeout=WAIT)
    paused_at = session.run.step
    assert session.run.state == "paused" and session.resumable and 0 < paused_at < 120
    assert page.resume_button.isEnabled() and not page.pause_button.isEnabled()
    assert "Paused" in page.status.text()
    page.resume_button.click()
    qtbot.waitUntil(lambda: session.state == "done", timeout=WAIT)
    assert session.run.step == 120 and page.isComplete() and "Finished" in page.status.text()
    assert session.metrics[-1].step == 120 and page.progress.value() == 120
    assert session.notices == [
        "No CUDA GPU: the optimiser is standard AdamW (8-bit AdamW needs CUDA)."
    ]
    wizard.next()

    # 6. before and after
    page = wizard.page_widget(FinetuneWizard.EVALUATE)
    qtbot.waitUntil(lambda: session.evaluation is not None, timeout=WAIT)
    evaluation: pf.Evaluation = session.evaluation
    assert evaluation.adapter_loss < evaluation.base_loss and evaluation.probes
    assert "with your adapter" in page.summary.text()
    wizard.next()

    # 7. use: chat with it, export it
    page = wizard.page_widget(FinetuneWizard.USE)
    with qtbot.waitSignal(session.use_adapter_requested) as used:
        page.use_button.click()
    assert used.args == [model, str(tmp_path / "run" / "adapter")]
    page.destination.setText(str(tmp_path / "exported"))
    page.export_button.click()
    qtbot.waitUntil(lambda: "copied" in page.outcome.text(), timeout=WAIT)
    assert (tmp_path / "exported" / "adapter_config.json").is_file()
    assert wizard.button(QWizard.WizardButton.FinishButton).isVisible()


def test_a_failed_check_is_shown_and_nothing_moves_on(
    qtbot, engine: EngineClient, tiny_model, tmp_path: Path
) -> None:
    session = FinetuneSession(engine)
    wizard = open_wizard(qtbot, session, str(tiny_model("llava")))
    wizard.next()
    page = wizard.page_widget(FinetuneWizard.DATA)
    page.folder.setText(str(tmp_path / "does-not-exist"))
    page.folder.editingFinished.emit()
    qtbot.waitUntil(lambda: session.state == "failed", timeout=WAIT)
    assert "not found" in page.summary.text() and not page.isComplete()


def test_pictures_without_captions_say_there_is_nothing_to_train_on(
    qtbot, engine: EngineClient, tiny_model, tmp_path: Path
) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in ("red", "blue", "green", "black"):
        make_image(folder / f"{name}.png", COLOURS[name], (64, 48))
    session = FinetuneSession(engine)
    wizard = open_wizard(qtbot, session, str(tiny_model("llava")))
    wizard.next()
    page = wizard.page_widget(FinetuneWizard.DATA)
    page.folder.setText(str(folder))
    page.folder.editingFinished.emit()
    qtbot.waitUntil(lambda: session.report is not None and session.state == "idle", timeout=WAIT)
    summary = page.summary.text()
    assert "Nothing to train on" in summary and "All 0" not in summary
    assert "none of the 4 pictures has a caption file" in summary
    issues = " ".join(label.text() for label in page.issues.findChildren(QLabel))
    assert "Rows that could not be read</b> (4)" in issues
    assert "#b91c1c'>●</span> <b>Rows that could not be read" in issues  # marked as blocking
    assert "must be fixed before training" in issues
    assert not page.isComplete()
