"""A real engine subprocess for tests: start, handshake, run jobs, read events with timeouts."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

from engine import protocol as p


class EngineHarness:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._events: queue.Queue[p.Event | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(p.Hello(protocol_version=p.PROTOCOL_VERSION, client="test"))
        self.welcome = self.next_event(timeout=120)
        assert isinstance(self.welcome, p.Welcome)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._events.put(p.decode_event(line))
        self._events.put(None)

    def send(self, command: p.Command) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(p.encode(command))
        self.proc.stdin.flush()

    def next_event(self, timeout: float = 120) -> p.Event:
        event = self._events.get(timeout=timeout)
        assert event is not None, "the engine exited"
        return event

    def job_events(self, job_id: str, timeout: float = 300) -> Iterator[p.Event]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(timeout=max(0.1, deadline - time.monotonic()))
            if getattr(event, "job_id", None) == job_id:
                yield event
                if isinstance(event, p.Finished):
                    return

    def run(self, command: p.Command, timeout: float = 300) -> tuple[p.Finished, str]:
        self.send(command)
        text = []
        for event in self.job_events(command.job_id, timeout):
            if isinstance(event, p.Delta):
                text.append(event.text)
            if isinstance(event, p.Finished):
                return event, "".join(text)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(p.Shutdown())
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def job_id() -> str:
    return uuid.uuid4().hex
