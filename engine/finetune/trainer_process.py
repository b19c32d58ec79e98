"""The engine's side of a trainer process: start it, read its JSON lines, stop it, notice its death.

Training, trial steps, evaluation and merging run in a child process so that an out-of-memory
error, a driver fault or a kill never takes the engine (and chat) down with it. Each line the
child writes is handed to ``on_event``; ``Cancel`` of the job becomes a ``stop`` line, after
which the child saves a checkpoint and the adapter and finishes.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import EngineError
from engine.protocol import ErrorCode

log = logging.getLogger(__name__)

OnEvent = Callable[[dict[str, Any]], None]
STOP_GRACE_S = 600.0  # a stop waits for the current micro-batch and one checkpoint write


class TrainerProcess:
    def __init__(self, run_dir: Path, args: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.finetune.worker", str(run_dir), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the trainer's log joins the engine's
            env=env,
            # Ctrl-C in a terminal must not kill it mid-write: it stops (and saves) when told
            # to on stdin, or when the engine is gone and stdin closes.
            start_new_session=True,
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, name="trainer-reader", daemon=True).start()
        self._stop_sent = False

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stop(self) -> None:
        """Ask for stop-and-save (idempotent)."""
        if self._stop_sent or self.process.poll() is not None:
            return
        self._stop_sent = True
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(b"stop\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def follow(self, on_event: OnEvent, cancelled: Callable[[], bool]) -> dict[str, Any]:
        """Hand every event to ``on_event`` until the child finishes; returns its last event."""
        finished: dict[str, Any] | None = None
        while True:
            if cancelled():
                self.stop()
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("trainer wrote a line that is not JSON: %r", line[:200])
                continue
            if event.get("event") == "finished":
                finished = event
            else:
                on_event(event)
        code = self.process.wait()
        if finished is None:
            raise EngineError(
                f"The training process ended unexpectedly (exit code {code}"
                + (", probably out of memory" if code in (-9, 137) else "")
                + "). Its last checkpoint is kept: resume the run to continue from there.",
                ErrorCode.INTERNAL,
            )
        return finished

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# Training runs by their folder, so that Pause/Stop commands (jobs of their own) can reach them.
_active: dict[str, TrainerProcess] = {}
_intents: dict[str, str] = {}
_lock = threading.Lock()


def training_runs() -> list[Path]:
    """The run folders whose trainer is running now."""
    with _lock:
        return [Path(key) for key in _active]


def request_stop(run_dir: Path, intent: str) -> bool:
    """Ask the run training in ``run_dir`` to stop and save; False if none is training there."""
    key = str(run_dir.resolve())
    with _lock:
        child = _active.get(key)
        if child is None:
            return False
        _intents[key] = intent
    child.stop()
    return True


def stop_intent(run_dir: Path) -> str | None:
    """Why the last run in ``run_dir`` was stopped (pause / stop), if it was asked to."""
    with _lock:
        return _intents.pop(str(run_dir.resolve()), None)


def run_child(
    run_dir: Path,
    args: list[str],
    on_event: OnEvent,
    cancelled: Callable[[], bool],
    track: bool = False,
) -> dict[str, Any]:
    """Start a trainer process, follow it to its end, and raise its error as an ``EngineError``."""
    child = TrainerProcess(run_dir, args)
    key = str(run_dir.resolve())
    if track:
        with _lock:
            _active[key] = child
    try:
        finished = child.follow(on_event, cancelled)
    finally:
        child.kill()  # only if it is still alive: an exception above must not leave it running
        if track:
            with _lock:
                _active.pop(key, None)
    if finished.get("reason") == "error":
        raise EngineError(
            str(finished.get("message", "Training failed.")),
            str(finished.get("code", ErrorCode.INTERNAL)),
        )
    return finished
