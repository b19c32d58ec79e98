"""A pool of decode processes that keeps a bounded number of files in flight.

The engine thread hands in tasks and takes back prepared images in completion order; while it
runs the model on one batch, the workers go on decoding the next (the executor's own thread
collects their results). At most ``max_in_flight`` results exist at a time, so memory stays flat
however large the folder. A worker that crashes (a file that breaks a decoder) does not stop the
run: the files that were in flight are retried one at a time, and the one that crashes again is
recorded as the culprit.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from engine.errors import EngineError
from engine.search import decode
from engine.search.decode import FileTask, PageTask, Prepared, WorkerConfig

log = logging.getLogger(__name__)

Task = FileTask | PageTask
START_TIMEOUT_S = 300.0
INLINE_MAX_TASKS = 24  # fewer images than this are decoded in the engine: no process start-up


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def make_pool(
    config: WorkerConfig, workers: int, tasks: list[Task], max_in_flight: int, inline: bool = True
) -> DecodePool | InlineDecoder:
    """Worker processes, or (``inline`` allowed, a handful of images, no PDFs) the engine
    itself: starting processes takes seconds, more than a few images take to decode."""
    small = len(tasks) < INLINE_MAX_TASKS and all(
        isinstance(task, FileTask) and task.kind == "image" for task in tasks
    )
    if inline and small:
        return InlineDecoder(config)
    return DecodePool(config, workers, max_in_flight)


class InlineDecoder:
    """The same interface as ``DecodePool``, decoding one file per ``take`` in this process."""

    def __init__(self, config: WorkerConfig) -> None:
        decode.configure(config)
        self._pending: collections.deque[Task] = collections.deque()

    def add(self, task: Task) -> None:
        self._pending.append(task)

    @property
    def idle(self) -> bool:
        return not self._pending

    def take(self, timeout: float | None = None) -> list[Prepared]:
        if not self._pending:
            return []
        task = self._pending.popleft()
        if isinstance(task, FileTask):
            return [decode.prepare_file(task)]
        return [decode.prepare_page(task)]

    def close(self, wait: bool = False) -> None:
        self._pending.clear()

    def __enter__(self) -> InlineDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DecodePool:
    def __init__(self, config: WorkerConfig, workers: int = 0, max_in_flight: int = 64) -> None:
        self.config = config
        self.workers = workers or default_workers()
        self.max_in_flight = max(max_in_flight, self.workers * 2)
        self._pending: collections.deque[Task] = collections.deque()
        self._suspects: collections.deque[Task] = collections.deque()  # after a crash
        self._in_flight: dict[concurrent.futures.Future[Prepared], Task] = {}
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._isolating = False  # the one task in flight is a suspect of a crash
        self._start()

    # -- public -------------------------------------------------------------------------------
    def add(self, task: Task) -> None:
        self._pending.append(task)

    @property
    def idle(self) -> bool:
        return not (self._pending or self._suspects or self._in_flight)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def take(self, timeout: float | None = None) -> list[Prepared]:
        """Results finished so far (waiting up to ``timeout`` for the first), refilling after."""
        self._fill()
        if not self._in_flight:
            return []
        done, _ = concurrent.futures.wait(
            list(self._in_flight), timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
        )
        results: list[Prepared] = []
        broken = False
        for future in done:
            task = self._in_flight.pop(future)
            try:
                results.append(future.result())
            except BrokenProcessPool:
                broken = True
                results.extend(self._on_crash(task))
        if broken:
            self._restart()
        self._fill()
        return results

    def close(self, wait: bool = False) -> None:
        """Stop the workers. Not waiting: an interpreter with torch loaded takes seconds to exit,
        and the executor's own thread reaps the processes."""
        executor, self._executor = self._executor, None
        self._pending.clear()
        self._suspects.clear()
        for future in self._in_flight:
            future.cancel()
        self._in_flight.clear()
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------
    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no engine threads or state copied
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=decode.init_worker,
            initargs=(self.config,),
        )
        try:
            # One ping per worker, all at once: the executor starts a process for each task that
            # finds no idle one, so every worker is up (and its imports done) before the work.
            pings = [self._executor.submit(decode.ping) for _ in range(self.workers)]
            problems = [ping.result(timeout=START_TIMEOUT_S) for ping in pings]
            problem = next((text for text in problems if text), "")
        except (BrokenProcessPool, concurrent.futures.TimeoutError) as exc:
            self.close()
            raise EngineError(f"The image decoder processes could not start ({exc}).") from exc
        if problem:
            self.close()
            raise EngineError(f"The image decoder processes could not start: {problem}")

    def _fill(self) -> None:
        assert self._executor is not None
        if self._suspects or self._isolating:
            # After a crash, files that were in flight run one at a time to find the culprit.
            if not self._in_flight:
                self._isolating = bool(self._suspects)
                if self._suspects:
                    self._submit(self._suspects.popleft())
            if self._isolating:
                return
        while self._pending and len(self._in_flight) < self.max_in_flight:
            self._submit(self._pending.popleft())

    def _submit(self, task: Task) -> None:
        assert self._executor is not None
        function: Any = decode.prepare_file if isinstance(task, FileTask) else decode.prepare_page
        self._in_flight[self._executor.submit(function, task)] = task

    def _on_crash(self, task: Task) -> list[Prepared]:
        if self._isolating:  # it ran alone: it is the culprit
            log.warning("decoding %s crashed its worker", task.path)
            page = task.page if isinstance(task, PageTask) else 0
            return [Prepared(path=task.path, page=page, error=CRASH_REASON)]
        self._suspects.append(task)
        return []

    def _restart(self) -> None:
        # Everything still in flight died with the pool; it becomes a suspect too.
        self._suspects.extend(self._in_flight.values())
        self._in_flight.clear()
        self._isolating = False
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self._start()


CRASH_REASON = "Reading this file made the decoder crash; the file is probably damaged."
