"""The engine process seen from the GUI: QProcess, version handshake, typed signals, restart."""

from __future__ import annotations

import collections
import logging
import os
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal, Slot

from engine import protocol as p

log = logging.getLogger("visiondesk.engine_client")
engine_log = logging.getLogger("visiondesk.engine")

_MAX_LINE_BYTES = 32 * 1024 * 1024  # a longer line without a newline is garbage, not a message


def _is_job(command: p.Command) -> bool:
    """Every command with a job id starts a job (and so ends with one Finished), but Cancel."""
    return hasattr(command, "job_id") and not isinstance(command, p.Cancel)


class EnginePhase:
    STOPPED = "stopped"  # not started yet, or stopped on purpose
    STARTING = "starting"  # first start: waiting for Welcome
    READY = "ready"
    RESTARTING = "restarting"  # died; a new one is on its way
    FAILED = "failed"  # gave up: version mismatch or it keeps dying on start


@dataclass(frozen=True)
class EngineExit:
    """How an engine process ended, for the window and the logs."""

    reason: str  # crashed | exited | failed_to_start | handshake_timeout | unresponsive
    exit_code: int | None = None
    stderr_tail: str = ""

    def sentence(self) -> str:
        text = {
            "crashed": "The engine process crashed",
            "exited": f"The engine process exited (code {self.exit_code})",
            "failed_to_start": "The engine process could not be started",
            "handshake_timeout": "The engine did not answer in time",
            "unresponsive": "The engine stopped responding",
        }.get(self.reason, "The engine stopped")
        reason = _last_error_line(self.stderr_tail)
        return f"{text}: {reason}" if reason else f"{text}."


_ERROR_LINE = re.compile(r"Error|Exception|Traceback|ERROR|CRITICAL|FATAL|Killed|Segmentation")


def _last_error_line(stderr_tail: str) -> str:
    """The engine's last complaint, if its last words were one (log chatter is not a reason)."""
    for line in reversed(stderr_tail.strip().splitlines()):
        if _ERROR_LINE.search(line):
            line = line.strip()
            return line if len(line) <= 200 else line[:199] + "…"
    return ""


def default_engine_command() -> list[str]:
    return [sys.executable, "-m", "engine"]


class EngineClient(QObject):
    """Owns one engine process at a time; every job it was given ends with one ``job_finished``."""

    phase_changed = Signal(str)
    welcome_received = Signal(object)  # protocol.Welcome, after every (re)start
    event_received = Signal(object)  # every protocol event, synthetic ones included
    delta_received = Signal(str, str)  # job_id, text
    job_finished = Signal(object)  # protocol.Finished
    status_received = Signal(object)  # protocol.EngineStatus
    engine_died = Signal(object)  # EngineExit
    engine_restarted = Signal(object)  # protocol.Welcome of the new process
    engine_failed = Signal(str)  # a sentence; no more automatic restarts
    line_rejected = Signal(str)  # a line that is not a protocol event (logged, then dropped)

    def __init__(
        self,
        command: list[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        handshake_timeout_ms: int = 60_000,
        restart_delay_ms: int = 1000,
        max_start_failures: int = 3,
        cancel_grace_ms: int = 15_000,
        log_path: Path | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._command = list(command or default_engine_command())
        self._log_path = log_path  # the engine's stderr is appended here as well as logged
        self._extra_env = dict(env or {})
        self._handshake_timeout_ms = handshake_timeout_ms
        self._restart_delay_ms = restart_delay_ms
        self._max_start_failures = max_start_failures
        self._cancel_grace_ms = cancel_grace_ms
        self._process: QProcess | None = None
        self._phase = EnginePhase.STOPPED
        self._welcome: p.Welcome | None = None
        self._stopping = False
        self._start_failures = 0
        self._buffer = b""
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._queue: list[p.Command] = []  # waits for Welcome
        self._open_jobs: set[str] = set()  # sent or queued, not yet finished
        self._cancel_timers: dict[str, QTimer] = {}
        self._handshake_timer = QTimer(self, singleShot=True)
        self._handshake_timer.timeout.connect(self._on_handshake_timeout)
        self._restart_timer = QTimer(self, singleShot=True)
        self._restart_timer.timeout.connect(self._spawn)

    # -- public API -----------------------------------------------------------------------

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def welcome(self) -> p.Welcome | None:
        return self._welcome

    def is_ready(self) -> bool:
        return self._phase == EnginePhase.READY

    def engine_pid(self) -> int | None:
        if self._process is None or self._process.state() == QProcess.ProcessState.NotRunning:
            return None
        return int(self._process.processId()) or None

    def open_jobs(self) -> set[str]:
        return set(self._open_jobs)

    def set_environment(self, variables: dict[str, str]) -> None:
        """Variables for the engine process from its next start on (settings that need one)."""
        self._extra_env.update(variables)

    def start(self) -> None:
        """Start the engine in the background; returns at once."""
        if self._process is not None:
            return
        self._stopping = False
        self._start_failures = 0
        self._set_phase(EnginePhase.STARTING)
        self._spawn()

    def restart(self) -> None:
        """Start again after a failure (the user asked); ``engine_restarted`` follows."""
        if self._process is None and not self._restart_timer.isActive():
            self._stopping = False
            self._start_failures = 0
            self._set_phase(EnginePhase.RESTARTING)
            self._spawn()

    def stop(self, timeout_ms: int = 3000) -> None:
        """Ask the engine to shut down, wait a little, then kill it. No restart follows."""
        self._stopping = True
        self._restart_timer.stop()
        self._handshake_timer.stop()
        process = self._process
        if process is not None and process.state() != QProcess.ProcessState.NotRunning:
            if self._welcome is not None:
                process.write(p.encode(p.Shutdown()))
            process.closeWriteChannel()
            if not process.waitForFinished(timeout_ms):
                process.kill()
                process.waitForFinished(1000)
        if self._process is not None:  # finished() may not have been delivered yet
            self._on_process_gone(EngineExit("exited", 0))
        self._fail_open_jobs("The engine was shut down.")
        self._set_phase(EnginePhase.STOPPED)

    def send(self, command: p.Command) -> None:
        """Send now if the engine is ready, else queue until it is."""
        if _is_job(command):
            self._open_jobs.add(command.job_id)  # type: ignore[attr-defined]
        if self.is_ready():
            self._write(command)
        else:
            self._queue.append(command)

    def start_chat(
        self,
        messages: list[p.ChatMessage],
        *,
        model: str | None,
        quant: str = "auto",
        device: str = "auto",
        sampling: p.Sampling | None = None,
        **routing: Any,
    ) -> str:
        """``routing``: the Chat's backend fields (backend, backend_model, policy, never_send…)."""
        job_id = uuid.uuid4().hex
        chat = p.Chat(
            job_id=job_id,
            messages=messages,
            sampling=sampling or p.Sampling(),
            model=model,
            quant=quant,  # type: ignore[arg-type]
            device=device,  # type: ignore[arg-type]
            **routing,
        )
        self.send(chat)
        return job_id

    def cancel(self, job_id: str) -> None:
        """Idempotent. A queued job ends at once; a running one gets a grace period."""
        if job_id not in self._open_jobs:
            return
        queued = [c for c in self._queue if getattr(c, "job_id", None) == job_id]
        if queued:
            self._queue = [c for c in self._queue if c not in queued]
            self._dispatch(p.Finished(job_id=job_id, reason="cancelled"))
            return
        self._write(p.Cancel(job_id=job_id))
        if job_id not in self._cancel_timers and self._cancel_grace_ms > 0:
            timer = QTimer(self, singleShot=True)
            timer.timeout.connect(lambda: self._on_cancel_ignored(job_id))
            timer.start(self._cancel_grace_ms)
            self._cancel_timers[job_id] = timer

    def request_status(self) -> None:
        if self.is_ready():
            self._write(p.GetStatus())

    # -- process life ---------------------------------------------------------------------

    @Slot()
    def _spawn(self) -> None:
        self._buffer = b""
        self._stderr_tail.clear()
        self._welcome = None
        process = QProcess(self)
        process.setProgram(self._command[0])
        process.setArguments(self._command[1:])
        process.setProcessEnvironment(self._environment())
        if hasattr(process, "setUnixProcessParameters") and sys.platform != "win32":
            # Its own session: a terminal's Ctrl-C reaches the window, which closes and stops
            # the engine in order, rather than killing the engine mid-answer.
            process.setUnixProcessParameters(QProcess.UnixProcessFlag.CreateNewSession)
        process.started.connect(self._on_process_started)
        process.readyReadStandardOutput.connect(self._on_process_stdout)
        process.readyReadStandardError.connect(self._on_process_stderr)
        process.finished.connect(self._on_process_finished)
        process.errorOccurred.connect(self._on_process_error)
        self._process = process
        log.info("starting engine: %s", " ".join(self._command))
        process.start()
        self._handshake_timer.start(self._handshake_timeout_ms)

    def _environment(self) -> QProcessEnvironment:
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        data_dir = os.environ.get("VISIONDESK_DATA_DIR")
        if data_dir:
            env.insert("VISIONDESK_DATA_DIR", data_dir)
        # Running from a checkout: make ``python -m engine`` find the package next to ours.
        root = Path(__file__).resolve().parents[1]
        if (root / "engine").is_dir():
            existing = env.value("PYTHONPATH", "")
            env.insert("PYTHONPATH", os.pathsep.join(filter(None, [str(root), existing])))
        for key, value in self._extra_env.items():
            env.insert(key, value)
        return env

    @Slot()
    def _on_process_started(self) -> None:
        if self._process is not None:
            self._process.write(
                p.encode(p.Hello(protocol_version=p.PROTOCOL_VERSION, client="desktop"))
            )

    @Slot(int, QProcess.ExitStatus)
    def _on_process_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        if self.sender() is not self._process:
            return
        self._on_process_stdout()  # events written just before the end still count
        self._on_process_stderr()
        crashed = exit_status == QProcess.ExitStatus.CrashExit
        self._on_process_gone(EngineExit("crashed" if crashed else "exited", exit_code))

    @Slot(QProcess.ProcessError)
    def _on_process_error(self, error: QProcess.ProcessError) -> None:
        # Only a failed start never reaches finished(); other errors are followed by it.
        if error == QProcess.ProcessError.FailedToStart and self.sender() is self._process:
            self._on_process_gone(EngineExit("failed_to_start"))

    @Slot()
    def _on_handshake_timeout(self) -> None:
        log.warning("engine sent no Welcome within %d ms; killing it", self._handshake_timeout_ms)
        self._kill(EngineExit("handshake_timeout"))

    def _on_cancel_ignored(self, job_id: str) -> None:
        self._cancel_timers.pop(job_id, None)
        if job_id in self._open_jobs:
            log.warning("engine ignored Cancel for %s; killing it", job_id)
            self._kill(EngineExit("unresponsive"))

    def _kill(self, outcome: EngineExit) -> None:
        process = self._process
        if process is None:
            return
        self._on_process_gone(outcome)
        process.kill()
        process.waitForFinished(2000)

    def _on_process_gone(self, outcome: EngineExit) -> None:
        """The single place where an engine process's end is handled."""
        process, self._process = self._process, None
        if process is None:
            return
        process.blockSignals(True)  # its last words (finished, errors) are handled here
        process.deleteLater()
        self._handshake_timer.stop()
        was_ready, self._welcome = self._phase == EnginePhase.READY, None
        if self._stopping:
            return
        outcome = EngineExit(outcome.reason, outcome.exit_code, "\n".join(self._stderr_tail))
        log.warning("engine stopped: %s", outcome.sentence())
        self._start_failures = 0 if was_ready else self._start_failures + 1
        give_up = self._start_failures >= self._max_start_failures
        self._set_phase(EnginePhase.FAILED if give_up else EnginePhase.RESTARTING)
        self.engine_died.emit(outcome)
        # Sent jobs died with the process; queued ones never reached it and wait for the next.
        sent = self._open_jobs - {getattr(c, "job_id", None) for c in self._queue}
        for job_id in sorted(sent):
            self._finish_with_error(job_id, p.ErrorCode.ENGINE_DIED, outcome.sentence())
        if give_up:
            self._fail_open_jobs(outcome.sentence())
            self.engine_failed.emit(f"{outcome.sentence()} VisionDesk stopped retrying.")
        else:
            self._restart_timer.start(
                self._restart_delay_ms * 2 ** max(0, self._start_failures - 1)
            )

    def _fail_open_jobs(self, sentence: str) -> None:
        self._queue = [c for c in self._queue if not _is_job(c)]
        for job_id in sorted(self._open_jobs):
            self._finish_with_error(job_id, p.ErrorCode.ENGINE_DIED, sentence)

    def _finish_with_error(self, job_id: str, code: str, sentence: str) -> None:
        self._dispatch(p.Finished(job_id=job_id, reason="error", error_code=code, message=sentence))

    # -- reading --------------------------------------------------------------------------

    @Slot()
    def _on_process_stdout(self) -> None:
        process = self._process
        if process is None:
            return
        self._buffer += bytes(process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > _MAX_LINE_BYTES:
            self._reject(self._buffer[:200], "line too long")
            self._buffer = b""
        for line in lines:
            if line.strip():
                self._on_line(line)

    @Slot()
    def _on_process_stderr(self) -> None:
        if self._process is None:
            return
        data = bytes(self._process.readAllStandardError().data())
        if self._log_path is not None and data:
            try:
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self._log_path, "ab") as log_file:
                    log_file.write(data)
            except OSError as error:
                log.warning("cannot write the engine log %s: %s", self._log_path, error)
                self._log_path = None
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self._stderr_tail.append(line)
                engine_log.info("%s", line)

    def _on_line(self, line: bytes) -> None:
        try:
            event = p.decode_event(line)
        except p.DecodeError as error:
            self._reject(line, str(error))
            return
        if self._welcome is None:
            self._on_handshake_event(event)
        else:
            self._dispatch(event)

    def _reject(self, line: bytes, reason: str) -> None:
        text = line[:200].decode("utf-8", "replace")
        log.warning("dropped a line from the engine (%s): %r", reason, text)
        self.line_rejected.emit(text)

    def _on_handshake_event(self, event: p.Event) -> None:
        if isinstance(event, p.ProtocolError) and event.code == p.ErrorCode.VERSION_MISMATCH:
            self._give_up(f"The engine speaks another protocol version: {event.message}")
        elif isinstance(event, p.Welcome):
            if event.protocol_version != p.PROTOCOL_VERSION:
                self._give_up(
                    f"The engine speaks protocol {event.protocol_version}; this window needs"
                    f" {p.PROTOCOL_VERSION}. Reinstall VisionDesk so both parts match."
                )
                return
            self._on_welcome(event)
        else:
            log.warning("ignoring %s received before Welcome", type(event).__name__)

    def _on_welcome(self, welcome: p.Welcome) -> None:
        self._handshake_timer.stop()
        restarted = self._phase == EnginePhase.RESTARTING
        self._welcome = welcome
        self._set_phase(EnginePhase.READY)
        queue, self._queue = self._queue, []
        for command in queue:
            self._write(command)
        self.welcome_received.emit(welcome)
        if restarted:
            self.engine_restarted.emit(welcome)
        self.request_status()

    def _give_up(self, sentence: str) -> None:
        log.error("%s", sentence)
        self._stopping = True  # what follows is not a crash to recover from
        process = self._process
        if process is not None:
            process.kill()
            process.waitForFinished(2000)
            self._on_process_gone(EngineExit("exited"))
        self._fail_open_jobs(sentence)
        self._set_phase(EnginePhase.FAILED)
        self.engine_failed.emit(sentence)

    def _dispatch(self, event: p.Event) -> None:
        if isinstance(event, p.Finished):
            if event.job_id not in self._open_jobs:
                return  # a second Finished, or one for a job we never sent: ignore
            self._open_jobs.discard(event.job_id)
            timer = self._cancel_timers.pop(event.job_id, None)
            if timer is not None:
                timer.stop()
                timer.deleteLater()
        self.event_received.emit(event)
        if isinstance(event, p.Delta):
            self.delta_received.emit(event.job_id, event.text)
        elif isinstance(event, p.Finished):
            self.job_finished.emit(event)
        elif isinstance(event, p.EngineStatus):
            self.status_received.emit(event)
        elif isinstance(event, p.ProtocolError):
            log.warning("engine rejected a command (%s): %s", event.code, event.message)

    # -- writing --------------------------------------------------------------------------

    def _write(self, command: p.Command) -> None:
        process = self._process
        if process is None or process.write(p.encode(command)) < 0:
            log.warning("could not write %s to the engine", type(command).__name__)

    def _set_phase(self, phase: str) -> None:
        if phase != self._phase:
            self._phase = phase
            self.phase_changed.emit(phase)
