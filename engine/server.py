"""The engine's process shell: JSON lines on stdin/stdout, logs on stderr, parent-death checks.

Protocol bytes go only to the original stdout descriptor; file descriptor 1 is pointed at stderr
so that a stray ``print`` from a library can never corrupt the stream.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import BinaryIO

from engine import protocol as p
from engine.core import Core

log = logging.getLogger("engine")

EXIT_OK = 0
EXIT_VERSION_MISMATCH = 3


class Writer:
    """Serialises events from any thread onto the protocol stream, one flush per batch."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._queue: queue.Queue[p.Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def send(self, event: p.Event) -> None:
        self._queue.put(event)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while True:  # drain what is already waiting, so bursts of deltas cost one write
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            events = _coalesce([event for event in batch if event is not None])
            try:
                self._stream.write(b"".join(p.encode(event) for event in events))
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                os._exit(EXIT_OK)  # the client is gone; nobody is left to report to
            if stop:
                return


def _coalesce(events: list[p.Event]) -> list[p.Event]:
    """Merge consecutive deltas of the same job (order and content are preserved)."""
    merged: list[p.Event] = []
    for event in events:
        last = merged[-1] if merged else None
        if isinstance(event, p.Delta) and isinstance(last, p.Delta) and last.job_id == event.job_id:
            merged[-1] = p.Delta(job_id=event.job_id, text=last.text + event.text)
        else:
            merged.append(event)
    return merged


def _claim_stdout() -> BinaryIO:
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=0)


def _watch_parent(parent_pid: int, on_death: threading.Event) -> None:
    while not on_death.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent process %d is gone; shutting down", parent_pid)
            on_death.set()
            os._exit(EXIT_OK)
        time.sleep(1.0)


def serve(stdin: BinaryIO, writer: Writer, core: Core) -> int:
    """Read commands until EOF or shutdown. Returns the process exit code."""
    greeted = False
    for raw in stdin:
        line = raw.strip()
        if not line:
            continue
        try:
            command = p.decode_command(line)
        except p.DecodeError as exc:
            log.warning("rejected line: %s", exc)
            writer.send(
                p.ProtocolError(
                    code=p.ErrorCode.MALFORMED,
                    message=f"Could not read that command: {exc}",
                    line=line[:200].decode("utf-8", "replace"),
                )
            )
            continue
        if isinstance(command, p.Hello):
            if command.protocol_version != p.PROTOCOL_VERSION:
                writer.send(
                    p.ProtocolError(
                        code=p.ErrorCode.VERSION_MISMATCH,
                        message=(
                            f"This engine speaks protocol {p.PROTOCOL_VERSION}, the client "
                            f"{command.protocol_version}. Reinstall VisionDesk so both match."
                        ),
                    )
                )
                return EXIT_VERSION_MISMATCH
            greeted = True
            writer.send(
                p.Welcome(
                    protocol_version=p.PROTOCOL_VERSION,
                    engine_version=p.ENGINE_VERSION,
                    pid=os.getpid(),
                    devices=core.runtime.devices(),
                )
            )
            continue
        if not greeted:
            writer.send(
                p.ProtocolError(
                    code=p.ErrorCode.MALFORMED, message="Send 'hello' before any other command."
                )
            )
            continue
        core.handle(command)
        if isinstance(command, p.Shutdown):
            return EXIT_OK
    log.info("stdin closed; shutting down")
    return EXIT_OK


def main() -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("VISIONDESK_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s engine %(levelname)s %(name)s: %(message)s",
    )
    out = _claim_stdout()
    writer = Writer(out)
    core = Core(writer.send)
    stopping = threading.Event()
    threading.Thread(
        target=_watch_parent, args=(os.getppid(), stopping), name="parent-watch", daemon=True
    ).start()
    code = EXIT_OK
    try:
        code = serve(sys.stdin.buffer, writer, core)
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()
        core.close(timeout=5.0)
        writer.close()
    # Leave at once: a model library's non-daemon thread must not keep a dead engine alive.
    os._exit(code)
