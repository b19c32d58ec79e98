"""The trainer process: ``python -m engine.finetune.worker RUN_DIR [--resume|--trial|--evaluate|--merge OUT]``.

Started by the engine (``engine.finetune.trainer_process``), one per run. It writes one JSON
object per line on its original stdout (library prints go to stderr) and ends with exactly one
``{"event": "finished", ...}``. A line ``stop`` on stdin, or stdin closing because the engine
went away, makes it stop at the next safe point and save a checkpoint and the adapter.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("engine.finetune.worker")


class Channel:
    """JSON lines to the engine; step and eval events are also kept in the run's metrics file."""

    def __init__(self, stream: BinaryIO, run: Path | None) -> None:
        self._stream = stream
        self._run = run
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        from engine.finetune.runs import append_metric

        if self._run is not None and event.get("event") in ("step", "eval", "resumed"):
            append_metric(self._run, event)
        line = (json.dumps(event, default=_plain) + "\n").encode("utf-8")
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, OSError):
                pass  # the engine is gone; the run still saves its checkpoint


def _plain(value: Any) -> Any:
    return float(value) if hasattr(value, "__float__") else str(value)


def _watch_stdin(stop: threading.Event) -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            stop.set()
    stop.set()  # EOF: the engine closed the pipe or died


def _claim_stdout() -> BinaryIO:
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engine.finetune.worker")
    parser.add_argument("run_dir")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true")
    mode.add_argument("--trial", action="store_true", help="only the worst-case trial step")
    mode.add_argument("--evaluate", metavar="JSON", help='{"max_new_tokens": N, "probes": N}')
    mode.add_argument("--merge", metavar="OUT")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("VISIONDESK_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s trainer %(levelname)s %(name)s: %(message)s",
    )
    # Stop requests come on stdin (and stdin closes when the engine dies): an interrupt from a
    # terminal must not abandon a checkpoint half-written.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run = Path(args.run_dir).resolve()
    report = Channel(_claim_stdout(), run if not (args.evaluate or args.merge) else None)
    stop = threading.Event()
    threading.Thread(target=_watch_stdin, args=(stop,), name="stdin", daemon=True).start()
    try:
        finished = _dispatch(args, run, report, stop)
    except BaseException as exc:  # reported as one finished event; the engine maps the code
        finished = _failure(exc, run, training=not (args.evaluate or args.merge or args.trial))
    report(finished)
    sys.stderr.flush()
    os._exit(0)  # a library's non-daemon thread must not keep the trainer alive


def _dispatch(
    args: argparse.Namespace, run: Path, report: Channel, stop: threading.Event
) -> dict[str, Any]:
    from engine.finetune.config import TrainConfig
    from engine.finetune.runs import write_status

    config = TrainConfig.load(run)
    if args.evaluate:
        from engine.finetune.evaluate import evaluate_run

        options = json.loads(args.evaluate)
        return {
            "event": "finished",
            "reason": "done",
            "evaluation": evaluate_run(config, report, **options),
        }
    if args.merge:
        from engine.finetune.evaluate import merge_run

        return {
            "event": "finished",
            "reason": "done",
            "merged": merge_run(config, Path(args.merge), report),
        }
    if config.kind == "contrastive":
        from engine.finetune.clip_lora import ContrastiveTrainer as TrainerClass
    else:
        from engine.finetune.loop import Trainer as TrainerClass  # type: ignore[assignment]
    trainer = TrainerClass(config, report, stop)
    if not args.trial:
        write_status(run, "running", step=0)
    trainer.setup()
    if args.trial:
        return {"event": "finished", "reason": "done", "trial": trainer.trial_step()}
    if args.resume:
        trainer.resume()
    finished = trainer.run(trial=config.trial_step)
    state = {"done": "done", "early_stopped": "done", "stopped": "stopped"}[finished["reason"]]
    write_status(run, state, step=finished["step"], best_loss=finished.get("best_loss"))
    return finished


def _failure(exc: BaseException, run: Path, training: bool) -> dict[str, Any]:
    from engine.errors import classify

    error = classify(exc)
    if error.code == "out_of_memory":
        error = type(error)(
            "Training ran out of memory. Use batch size 1, a lower image budget, QLoRA (nf4) and "
            "gradient checkpointing, or shorter examples; the plan's trial step shows what fits."
        )
    if error.code == "internal":
        log.exception("training failed")
    if training:
        try:
            from engine.finetune.runs import write_status

            write_status(run, "failed", message=error.message)
        except OSError:
            pass
    return {"event": "finished", "reason": "error", "code": error.code, "message": error.message}


if __name__ == "__main__":
    sys.exit(main())
