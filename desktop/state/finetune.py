"""The state of one fine-tuning project: its choices, its engine jobs and what they reported.

The session outlives the wizard (``desktop.views.finetune_wizard``) that shows it, so the window
can close the wizard while a run trains and open a new one on the same session later.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Protocol

import msgspec
from PySide6.QtCore import QObject, QTimer, Signal, Slot

from engine import protocol as p
from engine.protocol import finetune as pf

# Corrected copies of pictures are harmless, so they are made without asking; dropping rows is not.
AUTO_FIXES = ["colour_mode", "exif_rotated", "extreme_aspect", "too_large", "too_small"]
# How long to wait before reading a run folder again while its trainer is still saving.
REREAD_MS = 1000


class EngineLike(Protocol):
    event_received: Any  # a Qt signal carrying protocol events

    def send(self, command: p.Command) -> None: ...


# =================================================================================================
# State
# =================================================================================================


class FinetuneSession(QObject):
    """One fine-tuning project: its choices, its jobs and what the engine reported."""

    changed = Signal()  # anything a page shows
    metrics_added = Signal(object)  # pf.TrainMetrics
    eval_added = Signal(object)  # pf.EvalPoint
    use_adapter_requested = Signal(str, str)  # base model, adapter folder
    search_model_requested = Signal(str)  # a merged search model folder (contrastive runs)

    def __init__(self, engine: EngineLike, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._engine = engine
        self.model = ""
        self.data = ""
        self.settings = pf.FinetuneSettings(fixes=list(AUTO_FIXES))
        self.report: pf.DatasetReport | None = None
        self.plan: pf.FinetunePlan | None = None
        self.run: pf.RunInfo | None = None
        self.run_dir = ""
        self.state = (
            "idle"  # checking | planning | training | stopping | paused | stopped | done | failed
        )
        self.message = ""
        self.error = ""
        self.notices: list[str] = []
        self.metrics: list[pf.TrainMetrics] = []
        self.evals: list[pf.EvalPoint] = []
        self.evaluation: pf.Evaluation | None = None
        self.outcome = ""  # the last export / merge sentence
        self.runs: list[pf.RunInfo] = []  # the runs found in the runs folder
        self._runs_dir = ""
        self._planned_for: tuple[str, str, bytes] | None = None
        self._jobs: dict[str, str] = {}
        self._training_job = ""
        self._stop_intent = "stop"
        engine.event_received.connect(self._on_engine_event)

    # --- commands ------------------------------------------------------------------------
    def inspect(self, fixes: list[str] | None = None) -> None:
        if fixes is not None:
            self.settings.fixes = sorted(set(fixes))
        self._set("checking", "Checking the pictures and texts…")
        self._send(
            "inspect",
            pf.InspectDataset(
                job_id=_id(),
                folder=self.data,
                fixes=self.settings.fixes,
                caption_prompt=self.settings.caption_prompt,
            ),
        )

    def plan_run(self, trial: bool = True) -> None:
        """Plan a run for the current model, data and settings.

        Planning means a new run is being prepared, so a finished run is left (it stays in its
        folder and among the earlier runs) and the training page can start the new one."""
        if self.run is not None and not self.busy:
            self._forget_run()
        self.plan = None
        self._planned_for = self._plan_inputs()
        self._set("planning", "Counting tokens and planning memory…")
        self._send(
            "plan",
            pf.PlanFinetune(
                job_id=_id(), model=self.model, data=self.data, settings=self.settings, trial=trial
            ),
        )

    @property
    def plan_current(self) -> bool:
        """Whether the plan was made for the model, data and settings chosen now."""
        return self.plan is not None and self._planned_for == self._plan_inputs()

    def _plan_inputs(self) -> tuple[str, str, bytes]:
        return self.model, self.data, msgspec.json.encode(self.settings)

    def start(self, out_dir: str) -> None:
        self.run_dir = out_dir
        self.metrics, self.evals, self.notices, self.evaluation = [], [], [], None
        self._planned_for = self._plan_inputs()  # the engine plans again and sends that plan
        self._training_job = self._send(
            "train",
            pf.StartFinetune(
                job_id=_id(),
                model=self.model,
                data=self.data,
                out_dir=out_dir,
                settings=self.settings,
            ),
        )
        self._set("training", "Starting the trainer…")

    def pause(self) -> None:
        self._stop("pause")

    def stop(self) -> None:
        self._stop("stop")

    def _stop(self, intent: str) -> None:
        if self.state != "training" or not self._training_job:
            return
        self._stop_intent = intent
        command = pf.PauseFinetune if intent == "pause" else pf.StopFinetune
        self._send("control", command(job_id=_id(), run_dir=self.run_dir))
        self._set("stopping", "Finishing the current step and saving…")

    def resume(self) -> None:
        if not self.run_dir:
            return
        self._training_job = self._send(
            "train", pf.ResumeFinetune(job_id=_id(), run_dir=self.run_dir)
        )
        self._set("training", "Resuming from the last checkpoint…")

    def evaluate(self, max_new_tokens: int = 48) -> None:
        self.evaluation = None
        self._send(
            "evaluate",
            pf.EvaluateAdapter(job_id=_id(), run_dir=self.run_dir, max_new_tokens=max_new_tokens),
        )
        self.message = "Answering the probe pictures with the base model and with the adapter…"
        self.changed.emit()

    def export(self, out_dir: str) -> None:
        self._send("export", pf.ExportAdapter(job_id=_id(), run_dir=self.run_dir, out_dir=out_dir))

    def merge(self, out_dir: str) -> None:
        self.outcome = "Merging into a full-precision copy and checking it…"
        self._send("merge", pf.MergeAdapter(job_id=_id(), run_dir=self.run_dir, out_dir=out_dir))
        self.changed.emit()

    def new_run(self) -> None:
        """Leave the current run, so that the wizard can prepare and start another one.

        The run stays in its folder and is listed among the earlier runs."""
        if self.busy:
            return
        self._forget_run()
        self._set("idle", "")

    def list_runs(self, runs_dir: str) -> None:
        """Ask the engine for the runs in ``runs_dir``: a run of an earlier app session (paused,
        stopped, or cut off by a crash) can then be opened, resumed, evaluated and used."""
        self._runs_dir = runs_dir
        self._send("runs", pf.ListFinetuneRuns(job_id=_id(), runs_dir=runs_dir))

    def open_run(self, info: pf.RunInfo) -> None:
        """Make an earlier run the session's run, as its folder describes it."""
        if self.busy:
            return
        self._forget_run()
        self.model = info.model
        self._adopt(info)
        # Its curve so far, as a resume would replay it.
        request = pf.ListFinetuneRuns(job_id=_id(), runs_dir=info.run_dir, history=True)
        self._send("history", request)

    def _forget_run(self) -> None:
        self.run, self.run_dir, self.plan, self._planned_for = None, "", None, None
        self.metrics, self.evals, self.notices = [], [], []
        self.evaluation, self.outcome, self._training_job = None, "", ""

    def _reread_run(self) -> None:
        """Read the run folder again: what the trainer saved is the truth, not the last event."""
        self._send("reread", pf.ListFinetuneRuns(job_id=_id(), runs_dir=self.run_dir))

    def _adopt(self, info: pf.RunInfo, cause: str = "") -> None:
        """Show ``info`` as the session's run; ``cause`` is a sentence saying how it got there."""
        self.run, self.run_dir = info, info.run_dir
        where = f"step {info.step} of {info.total_steps}"
        lead = f"{cause} " if cause else ""
        if info.state == "done":
            self._set("done", f"{lead}Training finished.")
        elif info.state in ("paused", "stopped"):
            then = " Resume continues from there." if info.resumable else ""
            use = " The adapter so far can be evaluated and used." if info.adapter_dir else ""
            self._set(info.state, f"{lead}Saved at {where}.{then}{use}")
        else:  # interrupted or failed: a resume starts from the last checkpoint
            said = f": {info.message}" if info.message else "."
            self._set("failed", f"{lead}The run stopped at {where}{said}", error=True)

    def use_adapter(self) -> None:
        if self.run and self.run.adapter_dir:
            self.use_adapter_requested.emit(self.model, self.run.adapter_dir)

    def use_for_search(self) -> None:
        if self.run and self.run.merged_dir:
            self.search_model_requested.emit(self.run.merged_dir)

    @property
    def busy(self) -> bool:
        return self.state in ("checking", "planning", "training", "stopping")

    @property
    def resumable(self) -> bool:
        return self.state in ("paused", "stopped", "failed") and bool(
            self.run and self.run.resumable
        )

    # --- engine events -------------------------------------------------------------------
    def _send(self, kind: str, command: Any) -> str:
        self._jobs[command.job_id] = kind
        self._engine.send(command)
        return str(command.job_id)

    @Slot(object)
    def _on_engine_event(self, event: p.Event) -> None:
        kind = self._jobs.get(getattr(event, "job_id", ""))
        if kind is None:
            return
        if isinstance(event, p.Progress) and event.message:
            if kind in ("export", "merge"):
                self.outcome = event.message
            else:
                self.message = event.message
            self.changed.emit()
        elif isinstance(event, p.PartialResult):
            self._on_partial(event.data)
        elif isinstance(event, p.Finished):
            del self._jobs[event.job_id]
            self._on_finished(kind, event)

    def _on_partial(self, data: dict[str, Any]) -> None:
        if "train" in data:
            metrics = msgspec.convert(data["train"], pf.TrainMetrics)
            self.metrics.append(metrics)
            self.metrics_added.emit(metrics)
        elif "eval" in data:
            point = msgspec.convert(data["eval"], pf.EvalPoint)
            self.evals.append(point)
            self.eval_added.emit(point)
        elif "plan" in data:
            self.plan = msgspec.convert(data["plan"], pf.FinetunePlan)
        elif "history" in data:  # a resumed run replays its curve first
            self._replay(data["history"])
        elif "notice" in data and str(data["notice"]) not in self.notices:
            self.notices.append(str(data["notice"]))  # a resumed run says it again
        self.changed.emit()

    def _on_finished(self, kind: str, event: p.Finished) -> None:
        result = event.result or {}
        failed = event.reason == "error"
        if kind == "inspect":
            self.report = None if failed else pf.decode_report(result)
            self._set("failed" if failed else "idle", event.message, error=failed)
        elif kind == "plan":
            self.plan = None if failed else pf.decode_plan(result)
            self._set("failed" if failed else "idle", event.message, error=failed)
        elif kind == "train":
            self.run = pf.decode_run(result) if "run" in result else self.run
            if failed:
                if event.error_code == p.ErrorCode.ENGINE_DIED:
                    # The trainer saw the engine go and saved a checkpoint: offer to resume it.
                    last = self.metrics[-1] if self.metrics else None
                    self.run = self.run or pf.RunInfo(
                        run_dir=self.run_dir,
                        model=self.model,
                        recipe=self.settings.recipe,
                        state="interrupted",
                        step=last.step if last else 0,
                        total_steps=last.total_steps if last else 0,
                    )
                    self.run.resumable = True
                    # It goes on to finish its step and save; read the folder once it has.
                    self._reread_run()
                elif self.run is not None and self.run.step:
                    self.run.resumable = True
                self._set("failed", event.message, error=True)
            elif event.reason == "cancelled":
                paused = self.run.state == "paused" if self.run else self._stop_intent == "pause"
                self._set(
                    "paused" if paused else "stopped",
                    "Paused: the GPU is free; resume continues from this exact step."
                    if paused
                    else "Stopped and saved. The adapter so far can be evaluated and used.",
                )
            else:
                self._set("done", "Training finished.")
            if self._runs_dir:
                self.list_runs(self._runs_dir)
        elif kind == "runs":
            self.runs = [] if failed else _runs(result)
            self.changed.emit()
        elif kind == "reread":
            self._on_reread([] if failed else _runs(result))
        elif kind == "history":  # an earlier run just opened: its curve, unless it moved on
            runs = [] if failed else _runs(result)
            if runs and _same_folder(runs[0].run_dir, self.run_dir) and not self.metrics:
                self._replay(runs[0].history)
                self.changed.emit()
        elif kind == "evaluate":
            self.evaluation = None if failed else pf.decode_evaluation(result)
            self.message = event.message if failed else "Comparison finished."
            self.error = event.message if failed else ""
            self.changed.emit()
        elif kind == "control":  # a pause/stop request; the training job reports the outcome
            if failed:
                self.notices.append(event.message)
                self.changed.emit()
        else:  # export / merge
            self.outcome = event.message if failed else _outcome(kind, result)
            self.changed.emit()

    def _on_reread(self, runs: list[pf.RunInfo]) -> None:
        """The run folder after the engine died: show the step and adapter the trainer saved."""
        if self.state != "failed" or not runs or not _same_folder(runs[0].run_dir, self.run_dir):
            return  # resumed or left meanwhile, or the folder could not be read
        info = runs[0]
        if info.state == "running":  # the trainer is still finishing its step
            QTimer.singleShot(REREAD_MS, self, self._reread_run)
            return
        self._adopt(info, "The engine stopped during training; the trainer saved what it had.")

    def _replay(self, history: list[dict[str, Any]]) -> None:
        """A run's curve so far (its metrics file): steps and evaluations."""
        for point in history:
            values = {k: v for k, v in point.items() if k != "event"}
            if point.get("event") == "eval":
                self.evals.append(msgspec.convert(values, pf.EvalPoint))
            elif point.get("event") == "step":
                self.metrics.append(msgspec.convert(values, pf.TrainMetrics))

    def _set(self, state: str, message: str, error: bool = False) -> None:
        self.state, self.message = state, message
        self.error = message if error else ""
        self.changed.emit()


def _same_folder(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _runs(result: dict[str, Any]) -> list[pf.RunInfo]:
    return [msgspec.convert(run, pf.RunInfo) for run in result.get("runs", [])]


def _outcome(kind: str, result: dict[str, Any]) -> str:
    if kind == "export":
        return f"Adapter copied to {result.get('exported')}."
    merged = result.get("merged", {})
    check = (
        "and checked: it answers exactly as the adapter does"
        if merged.get("matches")
        else "but it does NOT answer like the adapter; keep using the adapter"
    )
    return f"Merged model saved to {merged.get('merged_dir')} ({merged.get('dtype')}), {check}."


def _id() -> str:
    return uuid.uuid4().hex


# =================================================================================================
# Pages
# =================================================================================================
