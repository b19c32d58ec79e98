"""The job table and dispatch: every command becomes a job that ends exactly once. No IO here.

``Core`` receives decoded commands (from ``engine.server`` or directly from a test) and emits
events through a callback. Work that touches the resident model runs on one worker thread, in
order, so a chat turn never races a load; cancel is handled on the caller's thread at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from engine import protocol as p
from engine.errors import EngineError, classify

log = logging.getLogger(__name__)

Emit = Callable[[p.Event], None]

# Text reaches the client at most this often per job (the first piece at once): smooth to read,
# and at hundreds of tokens a second an event per token would cost the model real time.
DELTA_INTERVAL_S = 0.02


class Job:
    """One running or queued job: its id, its cancel flag and the way it reports."""

    def __init__(self, job_id: str, kind: str, emit: Emit) -> None:
        self.id = job_id
        self.kind = kind
        self._emit = emit
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._pending = ""  # text not yet sent
        self._last_delta = 0.0

    # --- cancellation ----------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def is_finished(self) -> bool:
        return self._finished.is_set()

    # --- reporting ---------------------------------------------------------------------------
    def delta(self, text: str) -> None:
        if text and not self.is_finished:
            with self._lock:
                self._pending += text
            if time.monotonic() - self._last_delta >= DELTA_INTERVAL_S:
                self._flush_text()

    def _flush_text(self) -> None:
        """Send the text held back, before anything else this job reports."""
        with self._lock:
            text, self._pending = self._pending, ""
        if text:
            self._last_delta = time.monotonic()
            self._emit(p.Delta(job_id=self.id, text=text))

    def progress(
        self, stage: str, current: float = 0.0, total: float | None = None, message: str = ""
    ) -> None:
        if not self.is_finished:
            self._flush_text()
            self._emit(
                p.Progress(
                    job_id=self.id, stage=stage, current=current, total=total, message=message
                )
            )

    def partial(self, data: dict[str, Any]) -> None:
        if not self.is_finished:
            self._flush_text()
            self._emit(p.PartialResult(job_id=self.id, data=data))

    def finish(
        self,
        reason: p.FinishReason,
        *,
        result: dict[str, Any] | None = None,
        error: EngineError | None = None,
    ) -> bool:
        """Send the one ``Finished`` event. Returns False (and sends nothing) if already sent."""
        self._flush_text()  # the deltas always add up to the answer before it ends
        with self._lock:
            if self._finished.is_set():
                return False
            self._finished.set()
        self._emit(
            p.Finished(
                job_id=self.id,
                reason=reason,
                error_code=error.code if error else None,
                message=error.message if error else "",
                result=result,
            )
        )
        return True

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)


Handler = Callable[[Job, Any, Any], "dict[str, Any] | tuple[p.FinishReason, dict[str, Any]] | None"]


_import_lock = threading.Lock()
_imported = threading.Event()


def import_transformers() -> None:
    """Import transformers and its auto classes once, on one thread at a time.

    Its lazy module is not safe to import from two threads at once: two jobs started together in
    a fresh engine (a model list and a memory plan, say) could fail with "cannot import name
    'AutoConfig'". The first job pays the import; the others wait for it."""
    if _imported.is_set():
        return
    with _import_lock:
        if not _imported.is_set():
            import transformers

            for name in ("AutoConfig", "AutoModel", "AutoProcessor", "AutoModelForImageTextToText"):
                getattr(transformers, name)
            _imported.set()


class Core:
    """Owns the job table and the runtime (resident model). Thread-safe entry point: ``handle``."""

    def __init__(self, emit: Emit, runtime: Any = None) -> None:
        from engine.runtime import Runtime  # local: keeps `import engine.core` light for tests

        self._emit = emit
        self.runtime = runtime if runtime is not None else Runtime()
        self.runtime.bind(lambda: self._emit(self.status()))
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._queue: queue.Queue[tuple[Job, Any, Handler] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run_worker, name="model-worker", daemon=True)
        self._worker.start()
        self._closed = False

    # --- public ------------------------------------------------------------------------------
    def handle(self, command: p.Command) -> None:
        """Accept one command. Long work is queued; this returns quickly."""
        if isinstance(command, p.Cancel):
            self.cancel(command.job_id)
        elif isinstance(command, p.GetStatus):
            self._emit(self.status())
        elif isinstance(command, p.Hello):
            pass  # the server answers the handshake; a repeated hello is harmless
        elif isinstance(command, p.Shutdown):
            self.close()
        else:
            self._submit(command)

    def cancel(self, job_id: str) -> None:
        """Idempotent: cancelling an unknown or finished job does nothing."""
        with self._jobs_lock:
            job = self._jobs.get(job_id)
        if job is None or job.is_finished:
            return
        job.cancel()

    def status(self) -> p.EngineStatus:
        with self._jobs_lock:
            running = [job_id for job_id, job in self._jobs.items() if not job.is_finished]
        return self.runtime.status(running)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything, let running jobs end, and stop the worker."""
        if self._closed:
            return
        self._closed = True
        with self._jobs_lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        self._queue.put(None)
        self._worker.join(timeout)
        for job in jobs:
            job.finish("cancelled", error=None)
        self.runtime.close()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Test helper: wait until every job so far has finished."""
        with self._jobs_lock:
            jobs = list(self._jobs.values())
        return all(job.wait(timeout) for job in jobs)

    # --- internals ---------------------------------------------------------------------------
    def _submit(self, command: Any) -> None:
        from engine.capabilities import HANDLERS, beside_the_model

        handler = HANDLERS.get(type(command))
        job_id = getattr(command, "job_id", None)
        if handler is None or job_id is None:
            self._emit(
                p.ProtocolError(code=p.ErrorCode.MALFORMED, message=f"Not a job: {type(command)}")
            )
            return
        kind = type(command).__struct_config__.tag
        with self._jobs_lock:
            if job_id in self._jobs:
                self._emit(
                    p.ProtocolError(
                        code=p.ErrorCode.MALFORMED, message=f"Job id {job_id!r} is already in use."
                    )
                )
                return
            job = Job(job_id, str(kind), self._emit)
            self._jobs[job_id] = job
        if self._closed:
            job.finish("cancelled")
            return
        self._emit(p.JobStarted(job_id=job_id, kind=str(kind)))
        if beside_the_model(command):
            threading.Thread(
                target=self._run_alone,
                args=(job, command, handler),
                name=f"job-{kind}",
                daemon=True,
            ).start()
        else:
            self._queue.put((job, command, handler))

    def _run_worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, command, handler = item
            self._run(job, command, handler)
            with self._jobs_lock:  # finished jobs leave the table; a late cancel is a no-op
                self._jobs.pop(job.id, None)

    def _run_alone(self, job: Job, command: Any, handler: Handler) -> None:
        self._run(job, command, handler)
        with self._jobs_lock:
            self._jobs.pop(job.id, None)

    def _run(self, job: Job, command: Any, handler: Handler) -> None:
        from engine.capabilities import needs_transformers

        if job.cancelled:
            job.finish("cancelled")
            return
        try:
            if needs_transformers(command):
                import_transformers()
            outcome = handler(job, command, self.runtime)
        except BaseException as exc:
            error = classify(exc)
            if error.code == p.ErrorCode.INTERNAL:
                log.exception("job %s (%s) failed", job.id, job.kind)
            else:
                log.info("job %s (%s) failed: %s: %s", job.id, job.kind, error.code, error.message)
            job.finish("error", error=error, result=error.details)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return
        if isinstance(outcome, tuple):
            job.finish(outcome[0], result=outcome[1])
        else:
            job.finish("cancelled" if job.cancelled else "done", result=outcome)
