"""The fine-tuning wizard end to end with the real engine, a tiny model and generated pictures:
data check and fix, plan, train with pause / close / reopen / resume, compare, use and export.

The quick tests after those drive the Fine-tune page and the wizard against ``StubEngine``, which
records each command and lets the test answer it: reopening, a second run, earlier runs, a stale
plan, the engine dying mid-run, and where an export goes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel, QPushButton, QWizard

from desktop.engine_client import EngineClient
from desktop.state.finetune import FinetuneSession
from desktop.views.finetune_page import FinetunePage
from desktop.views.finetune_wizard import FinetuneWizard
from engine import protocol as p
from engine.protocol import finetune as pf
from tests.desktop.helpers import make_image

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# =================================================================================================
# Against a stub engine
# =================================================================================================

MODEL = "/models/tiny-llava"
# The page raises the wizard it opens, which the offscreen platform says it cannot do.
RAISES = pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise")


class StubEngine(QObject):
    """``send`` + ``event_received`` with no engine behind it: the test answers each command."""

    event_received = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[p.Command] = []

    def send(self, command: p.Command) -> None:
        self.sent.append(command)

    def all(self, kind: type) -> list[Any]:
        return [command for command in self.sent if isinstance(command, kind)]

    def last(self, kind: type) -> Any:
        return self.all(kind)[-1]

    def finish(self, command: Any, reason: str = "done", **result: Any) -> None:
        self.event_received.emit(p.Finished(job_id=command.job_id, reason=reason, result=result))


@pytest.fixture
def stub() -> StubEngine:
    return StubEngine()


def a_plan(steps: int) -> dict[str, Any]:
    plan = pf.FinetunePlan(
        model=MODEL,
        family="llava",
        recipe="language",
        recipe_summary="",
        settings=[pf.SettingChoice(name="total_steps", value=steps, reason="set by you")],
        trainable={},
        targets=[],
        memory=[],
        total_bytes=0,
        available_bytes=None,
        verdict="fits",
        advice=[],
        train_rows=4,
        eval_rows=0,
        skipped_rows=[],
        longest_tokens=12,
        longest_image_tokens=4,
        mean_tokens=10.0,
        steps_per_epoch=1,
        total_steps=steps,
        preview=[],
    )
    return msgspec.to_builtins(plan)


def a_run(run_dir: Path, state: str, step: int, total: int = 60) -> dict[str, Any]:
    adapter = run_dir / "adapter"
    info = pf.RunInfo(
        run_dir=str(run_dir),
        model=MODEL,
        recipe="language",
        state=state,  # type: ignore[arg-type]
        step=step,
        total_steps=total,
        adapter_dir=str(adapter) if state != "running" else None,
        resumable=state in ("paused", "stopped", "interrupted") and step < total,
    )
    return msgspec.to_builtins(info)


def a_finetune_page(qtbot, stub: StubEngine) -> FinetunePage:
    page = FinetunePage(stub, models=lambda: [MODEL])
    qtbot.addWidget(page)
    return page


def to_the_plan(wizard: FinetuneWizard, stub: StubEngine, max_steps: int) -> pf.PlanFinetune:
    """From the first page (or the data page) to the plan page, with the data already checked."""
    session = wizard.session
    session.data = "/data/colours"
    session.report = pf.DatasetReport(
        folder=session.data,
        format="sidecar_txt",
        kind="caption",
        rows=[pf.DatasetRow(0, [], "Describe this image.", "A red square.", 1, "red.txt")],
        issues=[],
        train_rows=1,
        eval_rows=0,
        probe_rows=0,
        split_reason="",
    )
    while wizard.currentId() != FinetuneWizard.RECIPE:
        wizard.next()
    wizard.page_widget(FinetuneWizard.RECIPE).max_steps.setValue(max_steps)
    wizard.next()
    assert wizard.currentId() == FinetuneWizard.PLAN
    planning = stub.last(pf.PlanFinetune)
    stub.finish(planning, plan=a_plan(max_steps))
    return planning


def a_finished_run(wizard: FinetuneWizard, stub: StubEngine, run_dir: Path) -> None:
    """Plan, train into ``run_dir`` and finish, as the engine would."""
    to_the_plan(wizard, stub, 3)
    wizard.next()
    train = wizard.page_widget(FinetuneWizard.TRAIN)
    train.out.setText(str(run_dir))
    train.start_button.click()
    (run_dir / "adapter").mkdir(parents=True)  # what the engine writes
    stub.finish(stub.last(pf.StartFinetune), run=a_run(run_dir, "done", 3, 3))
    assert wizard.session.state == "done"


@RAISES
def test_the_page_opens_the_wizard_again_after_it_was_closed(qtbot, stub: StubEngine) -> None:
    page = a_finetune_page(qtbot, stub)
    first = page.open_wizard()
    with qtbot.waitSignal(first.destroyed):
        first.reject()  # the wizard's Close button
    second = page.open_wizard()
    assert second.isVisible() and second.currentId() == FinetuneWizard.MODEL

    page.session.start("/runs/one")  # reopened while a run trains: on its training page
    with qtbot.waitSignal(second.destroyed):
        second.close()
    assert page.open_button.text() == "Show the training run…"
    page.open_button.click()
    assert page.wizard is not None and page.wizard.currentId() == FinetuneWizard.TRAIN


@RAISES
def test_a_closed_wizard_leaves_nothing_connected_to_the_session(qtbot, stub: StubEngine) -> None:
    page = a_finetune_page(qtbot, stub)
    wizard = page.open_wizard()
    with qtbot.waitSignal(wizard.destroyed):
        wizard.reject()
    session = page.session
    session.start("/runs/one")
    step = pf.TrainMetrics(1, 10, 0.1, 2.0, 1e-4, 100.0, 4.0, 0, 0.0, 9.0, 1.0)
    with qtbot.captureExceptions() as exceptions:
        stub.event_received.emit(
            p.PartialResult(
                job_id=stub.last(pf.StartFinetune).job_id, data={"train": msgspec.to_builtins(step)}
            )
        )
        session.pause()
    assert exceptions == [] and session.state == "stopping"


def test_changing_the_recipe_after_planning_plans_again(qtbot, stub: StubEngine) -> None:
    session = FinetuneSession(stub)
    wizard = open_wizard(qtbot, session, MODEL)
    first = to_the_plan(wizard, stub, 3)
    plan_page = wizard.page_widget(FinetuneWizard.PLAN)
    assert "3 training steps" in plan_page.summary.text()

    wizard.back()
    recipe = wizard.page_widget(FinetuneWizard.RECIPE)
    recipe.max_steps.setValue(7)
    recipe.rank.setValue(4)
    wizard.next()
    again = stub.last(pf.PlanFinetune)
    assert again is not first and (again.settings.max_steps, again.settings.rank) == (7, 4)
    assert session.plan is None and not plan_page.isComplete()  # the old plan is not shown
    assert "3 training steps" not in plan_page.summary.text()
    stub.finish(again, plan=a_plan(7))
    assert "7 training steps" in plan_page.summary.text() and plan_page.isComplete()

    wizard.back()
    wizard.next()  # nothing changed: the plan stands
    assert stub.last(pf.PlanFinetune) is again and session.plan is not None


def test_a_second_run_starts_after_going_back_to_change_the_recipe(
    qtbot, stub: StubEngine, tmp_path: Path
) -> None:
    session = FinetuneSession(stub)
    wizard = open_wizard(qtbot, session, MODEL)
    a_finished_run(wizard, stub, tmp_path / "first")
    train = wizard.page_widget(FinetuneWizard.TRAIN)
    assert not train.start_button.isEnabled() and train.new_button.isVisible()

    wizard.back()
    wizard.back()
    wizard.page_widget(FinetuneWizard.RECIPE).max_steps.setValue(5)
    wizard.next()
    stub.finish(stub.last(pf.PlanFinetune), plan=a_plan(5))
    wizard.next()
    assert session.run is None and train.start_button.isEnabled()
    assert not train.out.isReadOnly() and train.out.text() not in ("", str(tmp_path / "first"))
    train.out.setText(str(tmp_path / "second"))
    train.start_button.click()
    second = stub.last(pf.StartFinetune)
    assert second.out_dir == str(tmp_path / "second") and second.settings.max_steps == 5


@RAISES
def test_a_reopened_wizard_sets_up_a_new_run_from_a_finished_one(
    qtbot, stub: StubEngine, tmp_path: Path
) -> None:
    page = a_finetune_page(qtbot, stub)
    wizard = page.open_wizard()
    a_finished_run(wizard, stub, tmp_path / "first")
    with qtbot.waitSignal(wizard.destroyed):
        wizard.reject()

    wizard = page.open_wizard()
    assert wizard.currentId() == FinetuneWizard.TRAIN  # the finished run, to evaluate or use
    wizard.page_widget(FinetuneWizard.TRAIN).new_button.click()
    assert wizard.currentId() == FinetuneWizard.MODEL and page.session.run is None
    to_the_plan(wizard, stub, 4)
    wizard.next()
    train = wizard.page_widget(FinetuneWizard.TRAIN)
    assert train.start_button.isEnabled() and train.out.text() != str(tmp_path / "first")


@RAISES
def test_earlier_runs_are_listed_and_a_paused_one_can_be_resumed(
    qtbot, stub: StubEngine, data_dir: Path
) -> None:
    page = a_finetune_page(qtbot, stub)
    listing = stub.last(pf.ListFinetuneRuns)
    assert listing.runs_dir == str(data_dir / "finetune")
    paused, done = data_dir / "finetune" / "paused-run", data_dir / "finetune" / "done-run"
    stub.finish(listing, runs=[a_run(paused, "paused", 4, 30), a_run(done, "done", 30, 30)])
    assert page.runs_box.isVisibleTo(page)
    labels = [label.text() for label in page.runs_box.findChildren(QLabel, "earlierRun")]
    assert any("paused-run" in text and "paused at step 4 of 30" in text for text in labels)

    page.runs_box.findChildren(QPushButton, "openRun")[0].click()
    wizard = page.wizard
    assert wizard is not None and wizard.currentId() == FinetuneWizard.TRAIN
    train = wizard.page_widget(FinetuneWizard.TRAIN)
    assert page.session.model == MODEL and train.progress.value() == 4
    assert train.resume_button.isEnabled() and train.isComplete()  # its adapter can be used
    # Its curve so far is read from its folder and shown, as a resume would replay it.
    curve = stub.last(pf.ListFinetuneRuns)
    assert curve.runs_dir == str(paused) and curve.history
    steps = [{"event": "step", **msgspec.to_builtins(
        pf.TrainMetrics(n, 30, 2.0 / n, 2.0, 1e-4, 100.0, 4.0, 0, 0.0, 9.0, 1.0)
    )} for n in range(1, 5)]  # fmt: skip
    stub.finish(curve, runs=[{**a_run(paused, "paused", 4, 30), "history": steps}])
    assert [m.step for m in page.session.metrics] == [1, 2, 3, 4]
    train.resume_button.click()
    assert stub.last(pf.ResumeFinetune).run_dir == str(paused)


def test_after_the_engine_died_the_wizard_shows_what_the_trainer_saved(
    qtbot, stub: StubEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("desktop.state.finetune.REREAD_MS", 10)
    session = FinetuneSession(stub)
    wizard = open_wizard(qtbot, session, MODEL)
    to_the_plan(wizard, stub, 60)
    wizard.next()
    train = wizard.page_widget(FinetuneWizard.TRAIN)
    run_dir = tmp_path / "run"
    train.out.setText(str(run_dir))
    train.start_button.click()
    start = stub.last(pf.StartFinetune)
    step = pf.TrainMetrics(6, 60, 1.5, 2.0, 1e-4, 100.0, 4.0, 0, 0.0, 9.0, 1.0)
    stub.event_received.emit(
        p.PartialResult(job_id=start.job_id, data={"train": msgspec.to_builtins(step)})
    )
    stub.event_received.emit(
        p.Finished(
            job_id=start.job_id,
            reason="error",
            error_code=p.ErrorCode.ENGINE_DIED,
            message="The engine process crashed.",
        )
    )
    assert session.state == "failed" and train.progress.value() == 6

    # The engine restarted; the trainer is still finishing its step, then it has saved.
    stub.finish(stub.last(pf.ListFinetuneRuns), runs=[a_run(run_dir, "running", 9)])
    assert session.state == "failed"
    qtbot.waitUntil(lambda: len(stub.all(pf.ListFinetuneRuns)) == 2)
    reread = stub.last(pf.ListFinetuneRuns)
    assert reread.runs_dir == str(run_dir)
    stub.finish(reread, runs=[a_run(run_dir, "stopped", 11)])
    assert session.state == "stopped" and session.run.step == 11
    assert train.progress.value() == 11 and "step 11 of 60" in train.status.text()
    assert train.isComplete() and train.resume_button.isEnabled()


def test_export_and_merge_wait_for_a_full_destination_path(
    qtbot, stub: StubEngine, tmp_path: Path
) -> None:
    session = FinetuneSession(stub)
    wizard = open_wizard(qtbot, session, MODEL)
    use = wizard.page_widget(FinetuneWizard.USE)
    assert not use.export_button.isEnabled() and not use.merge_button.isEnabled()
    use.destination.setText("adapter-copy")  # relative: it would land in the engine's folder
    assert not use.export_button.isEnabled() and not use.merge_button.isEnabled()
    use.destination.setText(str(tmp_path / "adapter-copy"))
    assert use.export_button.isEnabled() and use.merge_button.isEnabled()
    use.export_button.click()
    assert stub.last(pf.ExportAdapter).out_dir == str(tmp_path / "adapter-copy")
