"""Fine-tuning jobs: inspect data, plan, train (in a child process), resume, evaluate, merge.

The heavy work runs in ``engine.finetune``; training, trial steps, evaluation and merging run in
a trainer process (``engine.finetune.trainer_process``) so that an out-of-memory error or a kill
never takes the engine down. ``Cancel`` of a training job is "stop and save": the job ends
``cancelled`` with a resumable run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from engine import protocol as p
from engine.core import Job
from engine.errors import BadInput
from engine.protocol import finetune as pf
from engine.runtime import Runtime

Register = Callable[[type, Callable[..., Any]], None]
Outcome = dict[str, Any] | tuple[p.FinishReason, dict[str, Any]]


# Every fine-tuning job works on files or in a child process, never on the resident model, so
# each runs on its own thread: a training run of hours never holds up a chat.
FINETUNE_JOBS: frozenset[type] = frozenset(
    {
        pf.InspectDataset,
        pf.PlanFinetune,
        pf.StartFinetune,
        pf.ResumeFinetune,
        pf.ListFinetuneRuns,
        pf.PauseFinetune,
        pf.StopFinetune,
        pf.EvaluateAdapter,
        pf.MergeAdapter,
        pf.ExportAdapter,
    }
)


def register_finetune(register: Register) -> None:
    register(pf.InspectDataset, run_inspect)
    register(pf.PlanFinetune, run_plan)
    register(pf.StartFinetune, run_start)
    register(pf.ResumeFinetune, run_resume)
    register(pf.ListFinetuneRuns, run_list)
    register(pf.PauseFinetune, run_pause)
    register(pf.StopFinetune, run_pause)
    register(pf.EvaluateAdapter, run_evaluate)
    register(pf.MergeAdapter, run_merge)
    register(pf.ExportAdapter, run_export)


def run_inspect(job: Job, command: pf.InspectDataset, runtime: Runtime) -> dict[str, Any]:
    from engine.finetune.data import read_folder
    from engine.finetune.validate import inspect, to_report

    job.progress("checking", message=f"Checking {command.folder}")
    inspection = inspect(
        read_folder(command.folder, command.caption_prompt), command.fixes, command.seed
    )
    return {"report": msgspec.to_builtins(to_report(inspection))}


def run_plan(job: Job, command: pf.PlanFinetune, runtime: Runtime) -> dict[str, Any]:
    from engine.finetune.plan import build_plan
    from engine.finetune.runs import create_run
    from engine.finetune.trainer_process import run_child

    ctx = build_plan(
        command.model, command.data, command.settings, _progress(job, "planning"), _report(job)
    )
    plan = ctx.plan
    if command.trial and not job.cancelled:
        job.progress("trial", message="One training step on the longest examples")
        folder = Path(tempfile.mkdtemp(prefix="visiondesk-trial-"))
        try:
            create_run(ctx, str(folder / "run"), command.model, command.settings)
            finished = run_child(folder / "run", ["--trial"], _forward(job), lambda: job.cancelled)
            trial = finished.get("trial") or {}
            plan.trial = pf.TrialResult(
                ok=True,
                peak_bytes=int(trial.get("peak_bytes", 0)),
                seconds=float(trial.get("seconds", 0.0)),
                batch_size=int(trial.get("batch_size", 0)),
                tokens=int(trial.get("tokens", 0)),
            )
        except BadInput:
            raise
        except Exception as exc:  # an OOM in the trial is the plan's answer, not a failed job
            from engine.errors import classify

            error = classify(exc)
            plan.trial = pf.TrialResult(
                ok=False, peak_bytes=0, seconds=0.0, batch_size=0, tokens=0, message=error.message
            )
            plan.verdict = "does_not_fit" if error.code == "out_of_memory" else plan.verdict
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {"plan": msgspec.to_builtins(plan)}


def run_start(job: Job, command: pf.StartFinetune, runtime: Runtime) -> Outcome:
    from engine.finetune.plan import build_plan, run_dir_ready
    from engine.finetune.runs import create_run

    if not command.out_dir:
        raise BadInput("The command names no folder for the run.")
    run_dir_ready(Path(command.out_dir).expanduser())
    ctx = build_plan(
        command.model, command.data, command.settings, _progress(job, "planning"), _report(job)
    )
    job.partial({"plan": msgspec.to_builtins(ctx.plan)})
    config = create_run(ctx, command.out_dir, command.model, command.settings)
    return _train(job, config.run, [], runtime)


def run_resume(job: Job, command: pf.ResumeFinetune, runtime: Runtime) -> Outcome:
    from engine.finetune.runs import describe

    info = describe(command.run_dir)
    if info.state == "running":
        raise BadInput(f"The run in {info.run_dir} is still training.")
    if info.state == "done":
        raise BadInput(f"The run in {info.run_dir} is finished; there is nothing to resume.")
    job.partial({"history": info.history or _history(info.run_dir)})
    return _train(job, Path(info.run_dir), ["--resume"], runtime)


def _train(job: Job, run: Path, args: list[str], runtime: Runtime) -> Outcome:
    from engine.finetune.runs import describe, write_status
    from engine.finetune.trainer_process import run_child, stop_intent

    _free_gpu(job, runtime)
    if job.cancelled:
        return "cancelled", {"run": msgspec.to_builtins(describe(run))}
    stop_intent(run)  # a stale request from an earlier run in this folder
    finished = run_child(run, args, _forward(job), lambda: job.cancelled, track=True)
    if finished.get("reason") == "stopped" and stop_intent(run) == "pause":
        write_status(run, "paused", step=finished["step"], best_loss=finished.get("best_loss"))
    info = describe(run)
    result = {"run": msgspec.to_builtins(info), "reason": finished.get("reason")}
    if finished.get("reason") == "stopped":
        return "cancelled", result
    return result


def run_pause(
    job: Job, command: pf.PauseFinetune | pf.StopFinetune, runtime: Runtime
) -> dict[str, Any]:
    from engine.finetune.trainer_process import request_stop

    intent = "pause" if isinstance(command, pf.PauseFinetune) else "stop"
    if not request_stop(Path(command.run_dir).expanduser(), intent):
        raise BadInput(f"No run is training in {command.run_dir}.")
    return {"run_dir": command.run_dir, "requested": intent}


def run_list(job: Job, command: pf.ListFinetuneRuns, runtime: Runtime) -> dict[str, Any]:
    from engine.finetune.runs import list_runs

    runs = list_runs(command.runs_dir, history=command.history)
    return {"runs": [msgspec.to_builtins(run) for run in runs]}


def run_evaluate(job: Job, command: pf.EvaluateAdapter, runtime: Runtime) -> dict[str, Any]:
    from engine.finetune.runs import describe
    from engine.finetune.trainer_process import run_child

    info = describe(command.run_dir)
    if info.adapter_dir is None:
        raise BadInput("This run has no adapter yet: train (or stop and save) first.")
    options = json.dumps({"max_new_tokens": command.max_new_tokens, "probes": command.probes})
    finished = run_child(
        Path(info.run_dir), ["--evaluate", options], _forward(job), lambda: job.cancelled
    )
    return {"evaluation": finished["evaluation"], "run": msgspec.to_builtins(info)}


def run_merge(job: Job, command: pf.MergeAdapter, runtime: Runtime) -> dict[str, Any]:
    from engine.finetune.runs import describe
    from engine.finetune.trainer_process import run_child

    out = _destination(command.out_dir, "the merged model")
    info = describe(command.run_dir)
    if info.adapter_dir is None:
        raise BadInput("This run has no adapter to merge yet.")
    finished = run_child(
        Path(info.run_dir), ["--merge", str(out)], _forward(job), lambda: job.cancelled
    )
    return {"merged": finished["merged"]}


def run_export(job: Job, command: pf.ExportAdapter, runtime: Runtime) -> dict[str, Any]:
    from engine.finetune.runs import describe

    out = _destination(command.out_dir, "the adapter")
    info = describe(command.run_dir)
    if info.adapter_dir is None:
        raise BadInput("This run has no adapter to export yet.")
    if out.exists() and any(out.iterdir()):
        raise BadInput(f"{out} is not empty; choose a new folder for the adapter.")
    tmp = out.parent / f".{out.name}.exporting"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(info.adapter_dir, tmp)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return {"exported": str(out), "files": sorted(path.name for path in out.iterdir())}


def _destination(out_dir: str, what: str) -> Path:
    """The folder to write ``what`` into. An empty or relative name is refused, not read against
    the engine's working folder: nobody chose that folder, and the error would name it."""
    out = Path(out_dir.strip()).expanduser()
    if not out_dir.strip() or not out.is_absolute():
        raise BadInput(f"Choose a destination folder for {what} first (a full path).")
    return out.resolve()


def _free_gpu(job: Job, runtime: Runtime) -> None:
    """Unload an idle chat model from the GPU: training needs the memory more."""
    backend = runtime.backend
    if backend is None or backend.info().device != "cuda":
        return
    if runtime.status([]).state != "idle":  # answering right now: leave it, the plan warned
        job.partial({"notice": "A chat model is busy on the GPU; training shares the memory."})
        return
    job.progress("loading", message="Unloading the chat model to free the GPU for training")
    runtime.unload()


# --- event forwarding -----------------------------------------------------------------------------


def _progress(job: Job, stage: str) -> Callable[[str], None]:
    return lambda message: job.progress(stage, message=message)


def _report(job: Job) -> Callable[[Any], None]:
    """The data check as a partial result: what the plan left out and why, every row of it."""
    from engine.finetune.validate import to_report

    return lambda inspection: job.partial({"report": msgspec.to_builtins(to_report(inspection))})


def _forward(job: Job) -> Callable[[dict[str, Any]], None]:
    """Trainer events -> this job's Progress and PartialResult events."""

    def forward(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "step":
            metrics = msgspec.convert(
                {k: v for k, v in event.items() if k != "event"}, pf.TrainMetrics
            )
            job.progress("training", metrics.step, metrics.total_steps, describe_step(metrics))
            job.partial({"train": msgspec.to_builtins(metrics)})
        elif kind == "eval":
            point = msgspec.convert({k: v for k, v in event.items() if k != "event"}, pf.EvalPoint)
            job.partial({"eval": msgspec.to_builtins(point)})
        elif kind == "checkpoint":
            job.partial({"checkpoint": {"step": event["step"], "path": event["path"]}})
        elif kind == "trial":
            job.partial({"trial": {k: v for k, v in event.items() if k != "event"}})
        elif kind == "resumed":
            job.partial({"resumed": {"step": event["step"], "checkpoint": event["checkpoint"]}})
            job.progress("training", message=f"Resumed from {event['checkpoint']}")
        elif kind in ("notice", "loading"):
            job.progress(
                "loading" if kind == "loading" else "training", message=str(event["message"])
            )
            if kind == "notice":
                job.partial({"notice": str(event["message"])})

    return forward


def describe_step(metrics: pf.TrainMetrics) -> str:
    eta = ""
    if metrics.eta_s is not None:
        minutes = metrics.eta_s / 60
        eta = (
            f" · about {minutes:.0f} min left" if minutes >= 1 else f" · {metrics.eta_s:.0f} s left"
        )
    return (
        f"step {metrics.step}/{metrics.total_steps} · epoch {metrics.epoch:.2f} · "
        f"loss {metrics.loss:.3f} · {metrics.samples_per_s:.1f} samples/s{eta}"
    )


def _history(run_dir: str) -> list[dict[str, Any]]:
    from engine.finetune.runs import read_history

    return read_history(Path(run_dir))
