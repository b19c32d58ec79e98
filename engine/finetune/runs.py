"""Run folders: created from a plan, described for the wizard, and offered for resume.

Layout of a run folder::

    run.json          the resolved TrainConfig (what the trainer reads)
    plan.json         the plan shown before training (settings with reasons, memory)
    status.json       running | stopped | done | failed, with the trainer's pid
    metrics.jsonl     every progress event, for the curves when the wizard is reopened
    data/             the prepared rows (train/eval/probe) and corrected image copies
    checkpoints/      step-NNNNNNNN folders (last two and the best)
    adapter/          the adapter to use (peft format + visiondesk_adapter.json)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from engine.errors import BadInput
from engine.finetune import checkpoint as ckpt
from engine.finetune.config import RUN_FILE, TrainConfig, data_hash
from engine.finetune.plan import PlanContext, run_dir_ready
from engine.finetune.validate import write_prepared
from engine.protocol import finetune as pf

STATUS = "status.json"
METRICS = "metrics.jsonl"
PLAN = "plan.json"
RUN_STATES = ("running", "paused", "stopped", "interrupted", "done", "failed")


def create_run(
    ctx: PlanContext, out_dir: str, model_name: str, settings: pf.FinetuneSettings
) -> TrainConfig:
    """Write the prepared data, the plan and ``run.json`` into a new run folder."""
    run = Path(out_dir).expanduser().resolve()
    run_dir_ready(run)
    run.mkdir(parents=True, exist_ok=True)
    inspection = ctx.inspection
    skipped = ctx.skipped_rows
    inspection.train = [i for i in inspection.train if i not in skipped]
    inspection.eval = [i for i in inspection.eval if i not in skipped]
    inspection.probe = [i for i in inspection.probe if i not in skipped]
    data_dir = run / "data"
    write_prepared(inspection, data_dir)
    values = ctx.values
    facts = ctx.facts
    config = TrainConfig(
        run_dir=str(run),
        model_path=str(facts.resolved.path),
        model_name=model_name,
        model_type=facts.model_type,
        kind=facts.kind,
        recipe=values["recipe"],
        quant=values["quant"],
        device=values["device"],
        dtype=values["dtype"],
        rank=int(values["rank"]),
        alpha=int(values["alpha"]),
        dropout=float(values["dropout"]),
        learning_rate=float(values["learning_rate"]),
        vision_learning_rate=float(values["vision_learning_rate"]),
        weight_decay=float(values["weight_decay"]),
        max_grad_norm=float(values["max_grad_norm"]),
        warmup_ratio=float(values["warmup_ratio"]),
        optimizer=values["optimizer"],
        gradient_checkpointing=bool(values["gradient_checkpointing"]),
        batch_size=int(values["batch_size"]),
        grad_accum=int(values["grad_accum"]),
        epochs=int(values["epochs"]),
        steps_per_epoch=int(values["steps_per_epoch"]),
        total_steps=int(values["total_steps"]),
        eval_every=int(values["eval_every"]),
        checkpoint_every=int(values["checkpoint_every"]),
        early_stopping_patience=int(values["early_stopping_patience"]),
        max_length=int(values["max_length"]),
        seed=int(values["seed"]),
        data_dir=str(data_dir),
        data_hash=data_hash(data_dir),
        target_regex=ctx.regex,
        modules_to_save=ctx.modules_to_save,
        # Recorded whatever the run's own precision: the adapter may be used over a 4-bit base.
        skip_modules=ctx.facts.parts.skip_quantization(),
        vision_prefixes=ctx.vision_prefixes,
        image_max_pixels=values.get("image_max_pixels"),
        trial_step=settings.trial_step,
        allow_pickle=settings.allow_pickle,
        trust_remote_code=settings.trust_remote_code,
    )
    (run / PLAN).write_text(json.dumps(msgspec.to_builtins(ctx.plan), indent=2), encoding="utf-8")
    config.save()
    write_status(run, "created")
    return config


def write_status(run: Path, state: str, **fields: Any) -> None:
    data = {"state": state, "pid": os.getpid(), **fields}
    tmp = run / f".{STATUS}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, run / STATUS)


def append_metric(run: Path, event: dict[str, Any]) -> None:
    with (run / METRICS).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(event) + "\n")


def read_history(run: Path, limit: int = 5000) -> list[dict[str, Any]]:
    file = run / METRICS
    if not file.is_file():
        return []
    events = []
    for line in file.read_text(encoding="utf-8").splitlines()[-limit:]:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut off by a kill
        if event.get("event") in ("step", "eval"):
            events.append(event)
    return events


def describe(run_dir: str | Path, history: bool = False) -> pf.RunInfo:
    run = Path(run_dir).expanduser().resolve()
    if not (run / RUN_FILE).is_file():
        raise BadInput(f"{run} is not a fine-tuning run folder (no {RUN_FILE}).")
    config = TrainConfig.load(run)
    status = _read_json(run / STATUS)
    state = str(status.get("state", "created"))
    if state in ("running", "created"):
        state = "running" if _alive(status.get("pid")) else "interrupted"
    checkpoints = ckpt.listed(run)
    step = checkpoints[-1].step if checkpoints else 0
    if state not in ("interrupted", "failed"):  # else a resume continues from the checkpoint
        step = int(status.get("step", step))
    adapter = run / "adapter"
    merged = run / "merged"
    info = pf.RunInfo(
        run_dir=str(run),
        model=config.model_name,
        recipe=config.recipe,
        state=state if state in RUN_STATES else "interrupted",  # type: ignore[arg-type]
        step=step,
        total_steps=config.total_steps,
        adapter_dir=str(adapter) if adapter.is_dir() else None,
        best_eval_loss=status.get("best_loss"),
        resumable=state in ("paused", "stopped", "interrupted", "failed")
        and step < config.total_steps,
        message=str(status.get("message", "")),
        merged_dir=str(merged) if merged.is_dir() else None,
        history=read_history(run) if history else [],
    )
    return info


def list_runs(root: str | Path, history: bool = False) -> list[pf.RunInfo]:
    folder = Path(root).expanduser()
    if (folder / RUN_FILE).is_file():
        return [describe(folder, history)]
    if not folder.is_dir():
        return []
    runs = []
    for child in sorted(folder.iterdir()):
        if (child / RUN_FILE).is_file():
            try:
                runs.append(describe(child, history))
            except (BadInput, ValueError, KeyError, TypeError):
                continue  # a damaged run folder is not offered
    return runs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - os.kill(pid, 0) would terminate it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
