"""``visiondesk finetune``: train a LoRA adapter on a folder of images, resume, evaluate, merge.

    visiondesk finetune --model M --data DIR [--recipe R] [--out DIR] [--epochs N] [--max-steps N]
    visiondesk finetune --resume RUN_DIR
    visiondesk finetune --evaluate RUN_DIR
    visiondesk finetune --merge RUN_DIR --out DIR

Training runs in the engine's trainer process. Ctrl-C stops and saves: the run can be resumed
with ``--resume`` from exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from desktop.cli import exit_codes
from desktop.cli.data_folder import engine_log
from desktop.cli.engine_process import EngineGone, EngineProcess, new_job_id
from desktop.paths import data_dir
from engine import protocol as p
from engine.protocol import finetune as pf
from engine.protocol.wording import counted

GIB = 1024**3
REPORT_EVERY_S = 2.0  # progress lines on stderr at most this often (every eval is shown)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="teach a model your images and answers (LoRA/QLoRA adapter)",
        description="Fine-tune a LoRA adapter on a folder of images with captions or Q&A.",
    )
    parser.add_argument("--model", help="base model folder or cached Hugging Face repo id")
    parser.add_argument(
        "--data", help="folder with images + .txt captions, metadata.jsonl or a CSV"
    )
    parser.add_argument(
        "--recipe", choices=["projector", "language", "vision_language"], default="language"
    )
    parser.add_argument("--out", help="run folder (default: <data>/finetune/<model>-<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or interrupted run")
    parser.add_argument("--evaluate", metavar="RUN_DIR", help="base vs adapter on held-out rows")
    parser.add_argument(
        "--merge", metavar="RUN_DIR", help="merge the adapter into a bf16 base (--out)"
    )
    parser.add_argument("--plan", action="store_true", help="show the plan and stop")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--quant", choices=["auto", "nf4", "none"], default="auto")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--lr", type=float, dest="learning_rate")
    parser.add_argument("--rank", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--grad-accum", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--caption-prompt", default="Describe this image.")
    parser.add_argument("--no-fix", action="store_true", help="do not apply the dataset fixes")
    parser.add_argument("--no-trial", action="store_true", help="skip the worst-case trial step")
    parser.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    parser.add_argument("--verbose", action="store_true", help="show the engine's log")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        command = _command(args)
    except UsageError as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    try:
        with EngineProcess(engine_log(), verbose=args.verbose) as engine:
            return _follow(engine, command, args)
    except EngineGone as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED


class UsageError(ValueError):
    pass


def _command(args: argparse.Namespace) -> p.Command:
    modes = [bool(args.resume), bool(args.evaluate), bool(args.merge)]
    if sum(modes) > 1:
        raise UsageError("use only one of --resume, --evaluate and --merge")
    if args.resume:
        return pf.ResumeFinetune(job_id=new_job_id(), run_dir=_folder(args.resume))
    if args.evaluate:
        return pf.EvaluateAdapter(job_id=new_job_id(), run_dir=_folder(args.evaluate))
    if args.merge:
        if not args.out:
            raise UsageError("--merge needs --out for the merged model's folder")
        return pf.MergeAdapter(
            job_id=new_job_id(), run_dir=_folder(args.merge), out_dir=_folder(args.out)
        )
    if not args.model or not args.data:
        raise UsageError("--model and --data are required (or --resume RUN_DIR)")
    for name in ("epochs", "max_steps", "rank", "batch_size", "grad_accum"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    model = args.model
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    settings = pf.FinetuneSettings(
        recipe=args.recipe,
        quant=args.quant,
        device=args.device,
        rank=args.rank,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        epochs=args.epochs,
        max_steps=args.max_steps,
        seed=args.seed,
        caption_prompt=args.caption_prompt,
        fixes=[] if args.no_fix else list(pf.ISSUE_KINDS),
        trial_step=not args.no_trial,
    )
    if args.plan:
        return pf.PlanFinetune(
            job_id=new_job_id(), model=model, data=_folder(args.data), settings=settings
        )
    out = args.out or str(
        data_dir() / "finetune" / f"{Path(model).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    return pf.StartFinetune(
        job_id=new_job_id(),
        model=model,
        data=_folder(args.data),
        out_dir=_folder(out),
        settings=settings,
    )


def _folder(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def _follow(engine: EngineProcess, command: Any, args: argparse.Namespace) -> int:
    printer = Printer(as_json=args.json)
    finished: p.Finished | None = None
    stopping = False
    engine.send(command)
    while finished is None:
        try:
            for event in engine.events():
                if getattr(event, "job_id", None) != command.job_id:
                    continue
                printer.event(event)
                if isinstance(event, p.Finished):
                    finished = event
                    break
        except KeyboardInterrupt:
            if stopping:
                raise
            stopping = True  # the trainer saves a checkpoint and the adapter, then the job ends
            print("\nvisiondesk: stopping and saving (Ctrl-C again to abandon)…", file=sys.stderr)
            try:
                engine.send(p.Cancel(job_id=command.job_id))
            except EngineGone:
                break
        except EngineGone:
            if not stopping:
                raise
            break
    if finished is None:  # the engine went down while stopping; the trainer saves on its own
        return stopped(command)
    return printer.finish(finished, command)


def stopped(command: Any) -> int:
    """A job that ended on Ctrl-C without saying where its run stands.

    That is a job cancelled before training began (no run in its result), or an engine that
    went down while the trainer was saving; the run folder is known from the command.
    """
    run_dir = ""
    if isinstance(command, pf.StartFinetune):
        run_dir = command.out_dir
    elif isinstance(command, pf.ResumeFinetune):
        run_dir = command.run_dir
    if not run_dir:
        print("visiondesk: cancelled", file=sys.stderr)
    elif Path(run_dir).is_dir():
        print(
            f"visiondesk: stopped; continue with: visiondesk finetune --resume {run_dir}",
            file=sys.stderr,
        )
    else:
        print("visiondesk: stopped before training began; nothing was saved", file=sys.stderr)
    return exit_codes.INTERRUPTED


class Printer:
    """Progress on stderr for people, or every event as JSON on stdout for scripts."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._last = 0.0

    def event(self, event: p.Event) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(p.to_builtins(event), ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        if isinstance(event, p.Progress):
            if event.stage == "training" and event.total is None:
                return  # a notice or a resumption: printed from its partial result below
            urgent = event.stage != "training" or event.current == event.total
            now = time.monotonic()
            if event.message and (urgent or now - self._last >= REPORT_EVERY_S):
                self._last = now
                print(f"visiondesk: {event.message}", file=sys.stderr)
        elif isinstance(event, p.PartialResult):
            data = event.data
            if "eval" in data:
                point = data["eval"]
                print(
                    f"visiondesk: step {point['step']}: eval loss {point['eval_loss']:.4f} "
                    f"(best {point['best_loss']:.4f} at step {point['best_step']})",
                    file=sys.stderr,
                )
            elif "report" in data:  # the data check, before the plan
                report = pf.decode_report(data)
                if report.issues:
                    print(describe_issues(report), file=sys.stderr)
            elif "plan" in data:
                print(
                    describe_plan(msgspec.convert(data["plan"], pf.FinetunePlan)), file=sys.stderr
                )
            elif "resumed" in data:
                resumed = data["resumed"]
                print(
                    f"visiondesk: resumed at step {resumed['step']} ({resumed['checkpoint']})",
                    file=sys.stderr,
                )
            elif "notice" in data:
                print(f"visiondesk: {data['notice']}", file=sys.stderr)

    def finish(self, finished: p.Finished | None, command: Any) -> int:
        assert finished is not None
        if finished.reason == "error":
            print(f"visiondesk: error: {finished.message}", file=sys.stderr)
            return exit_codes.for_error(finished.error_code)
        result = finished.result or {}
        if self.as_json:
            return exit_codes.INTERRUPTED if finished.reason == "cancelled" else exit_codes.OK
        if finished.reason == "cancelled" and "run" not in result:
            return stopped(command)
        if "plan" in result:
            print(describe_plan(pf.decode_plan(result)))
        elif "evaluation" in result:
            print(describe_evaluation(pf.decode_evaluation(result)))
        elif "merged" in result:
            merged = result["merged"]
            verdict = "matches the adapter" if merged["matches"] else "DIFFERS from the adapter"
            print(
                f"merged model in {merged['merged_dir']} ({merged['dtype']}): {verdict} "
                f"(largest logit difference {merged['max_logit_diff']:.2e})"
            )
        elif "run" in result:
            run = pf.decode_run(result)
            if finished.reason == "cancelled":
                print(
                    f"visiondesk: stopped at step {run.step} of {run.total_steps}; the adapter so far is "
                    f"in {run.adapter_dir}. Continue with: visiondesk finetune --resume {run.run_dir}",
                    file=sys.stderr,
                )
                return exit_codes.INTERRUPTED
            best = (
                f", best eval loss {run.best_eval_loss:.4f}"
                if run.best_eval_loss is not None
                else ""
            )
            print(f"adapter saved to {run.adapter_dir} (step {run.step}{best})")
        return exit_codes.OK


def describe_plan(plan: pf.FinetunePlan) -> str:
    lines = [
        f"{plan.model} ({plan.family}): {plan.recipe_summary}",
        f"  {plan.train_rows} training rows, {plan.eval_rows} held out; "
        f"{plan.steps_per_epoch} step{'s' * (plan.steps_per_epoch != 1)} per epoch, "
        f"{plan.total_steps} step{'s' * (plan.total_steps != 1)} in all",
    ]
    for choice in plan.settings:  # a value you set is explained as "set by you"
        lines.append(f"  {choice.name:<24} {choice.value!s:<10} {choice.reason}")
    trained = ", ".join(
        f"{part} {count / 1e6:.2f} M" for part, count in plan.trainable.items() if count
    )
    lines.append(f"  trained parameters: {trained or 'none'}")
    room = f" of {plan.available_bytes / GIB:.1f} GB" if plan.available_bytes else ""
    lines.append(
        f"  memory: {plan.total_bytes / GIB:.2f} GB{room}: {plan.verdict.replace('_', ' ')}"
    )
    lines.extend(
        f"    {item.name:<12} {item.bytes / GIB:7.3f} GB  {item.note}" for item in plan.memory
    )
    if plan.trial is not None:
        trial = plan.trial
        lines.append(
            f"  trial step: {'ok' if trial.ok else 'failed'}, peak {trial.peak_bytes / GIB:.2f} GB"
            + (f" ({trial.message})" if trial.message else "")
        )
    lines.extend(f"  advice: {line}" for line in plan.advice)
    lines.extend(f"  note: {line}" for line in plan.warnings)
    lines.extend(f"  left out: {issue.message}" for issue in plan.skipped_rows)
    return "\n".join(lines)


def describe_issues(report: pf.DatasetReport, limit: int = 20) -> str:
    """The problems the data check found and no fix removed: rows that could not be read (left
    out), and those that block training until the files are corrected."""
    lines = [
        f"visiondesk: {counted(len(report.issues), 'problem')} in the data in {report.folder}:"
    ]
    for issue in report.issues[:limit]:
        if issue.blocking:
            lines.append(f"  {issue.message} (blocks training)")
        elif issue.kind == "parse_error":
            lines.append(f"  {issue.message} (left out)")
        else:
            lines.append(f"  {issue.message}")
    if len(report.issues) > limit:
        lines.append(f"  … and {len(report.issues) - limit} more")
    return "\n".join(lines)


def describe_evaluation(evaluation: pf.Evaluation) -> str:
    where = "held-out rows" if evaluation.on == "held_out" else "training rows (none held out)"
    lines = [
        f"on {evaluation.rows} {where}:",
        f"  loss  base {evaluation.base_loss:.4f}  ->  adapter {evaluation.adapter_loss:.4f}",
    ]
    for name in evaluation.metrics.get("adapter", {}):
        base = evaluation.metrics["base"].get(name, 0.0)
        lines.append(
            f"  {name:<20} base {base:.3f}  ->  adapter {evaluation.metrics['adapter'][name]:.3f}"
        )
    for probe in evaluation.probes:
        lines.append(
            f"  {Path(probe.images[0]).name if probe.images else '(no image)'}: {probe.prompt}"
        )
        lines.append(f"    expected: {probe.reference}")
        lines.append(f"    base:     {probe.base}")
        lines.append(f"    adapter:  {probe.adapter}")
    return "\n".join(lines)
