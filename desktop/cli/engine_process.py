"""A plain (non-Qt) engine client for the command line: one subprocess, typed events."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from desktop.cli.data_folder import DataFolderError, engine_log
from engine import protocol as p

HANDSHAKE_TIMEOUT_S = 120.0


class EngineGone(RuntimeError):
    """The engine process ended or broke the protocol."""


class EngineProcess:
    """Starts ``python -m engine``, shakes hands, sends commands and yields events."""

    def __init__(self, log_path: Path | None = None, verbose: bool = False) -> None:
        env = dict(os.environ)
        env.setdefault("VISIONDESK_LOG_LEVEL", "INFO" if verbose else "WARNING")
        self._log: IO[bytes] | None = None
        stderr: int | IO[bytes] | None = None
        if not verbose and log_path is not None:
            try:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log = open(log_path, "ab")
            except OSError as exc:
                raise DataFolderError(exc) from exc
            stderr = self._log
        # A session of its own: a terminal's Ctrl-C goes to the command alone, which stops the
        # job with a Cancel; the engine still ends with the command, when its stdin closes.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
        self._write_lock = threading.Lock()
        try:
            self.welcome = self._handshake()
        except BaseException:  # Ctrl-C while it starts, or a failed start: nothing to keep
            self.process.kill()
            self.process.wait()
            if self._log is not None:
                self._log.close()
            raise

    def _handshake(self) -> p.Welcome:
        self.send(p.Hello(protocol_version=p.PROTOCOL_VERSION, client="cli"))
        timer = threading.Timer(HANDSHAKE_TIMEOUT_S, self.process.kill)
        timer.start()
        try:
            for event in self.events():
                if isinstance(event, p.Welcome):
                    return event
                if isinstance(event, p.ProtocolError):
                    raise EngineGone(event.message)
        finally:
            timer.cancel()
        raise EngineGone("The engine process did not start (see the engine log).")

    def send(self, command: p.Command) -> None:
        assert self.process.stdin is not None
        with self._write_lock:
            try:
                self.process.stdin.write(p.encode(command))
                self.process.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise EngineGone("The engine process has stopped.") from exc

    def events(self) -> Iterator[p.Event]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                yield p.decode_event(line)
            except p.DecodeError:
                continue  # not ours; the engine never writes anything else to this stream
        self.process.wait()
        raise EngineGone(
            f"The engine process ended unexpectedly (exit code {self.process.returncode})."
        )

    def run_job(self, command: p.LoadModel | p.Chat | p.Unload) -> Iterator[p.Event]:
        """Send a job and yield its events up to and including its ``Finished``."""
        self.send(command)
        job_id = command.job_id
        for event in self.events():
            if getattr(event, "job_id", None) != job_id:
                continue
            yield event
            if isinstance(event, p.Finished):
                return

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send(p.Shutdown())
                assert self.process.stdin is not None
                self.process.stdin.close()
            except (EngineGone, OSError):
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_job_id() -> str:
    return uuid.uuid4().hex


def run_one_job(
    command: Any,
    on_event: Callable[[p.Event], None] | None = None,
    cancel_hint: str = "",
) -> p.Finished | None:
    """Run one job in a fresh engine and return its ``Finished``.

    Ctrl-C cancels the job and waits for its end; None means the engine itself failed (the
    reason is already on stderr)."""
    try:
        with EngineProcess(engine_log()) as engine:
            engine.send(command)
            try:
                return _until_finished(engine, command.job_id, on_event)
            except KeyboardInterrupt:
                engine.send(p.Cancel(job_id=command.job_id))
                hint = f"; {cancel_hint}" if cancel_hint else ""
                print(f"\nvisiondesk: cancelling{hint}", file=sys.stderr)
                return _until_finished(engine, command.job_id, None)
    except EngineGone as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return None


def _until_finished(
    engine: EngineProcess, job_id: str, on_event: Callable[[p.Event], None] | None
) -> p.Finished:
    for event in engine.events():
        if getattr(event, "job_id", None) != job_id:
            continue
        if on_event is not None:
            on_event(event)
        if isinstance(event, p.Finished):
            return event
    raise EngineGone("The engine process stopped.")  # events() raises first
