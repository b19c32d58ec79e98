"""The job table: every job ends exactly once, cancel is idempotent, failures don't stop it."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from engine import protocol as p
from engine.backends.base import GenerationResult
from engine.core import Core, import_transformers
from engine.errors import BadInput
from engine.runtime import Runtime


class ScriptedBackend:
    """A backend that streams one word per 10 ms until told to stop (drives the job machinery)."""

    name = "scripted"

    def __init__(self, words: int = 1000) -> None:
        self.words = words
        self.started = threading.Event()

    def info(self) -> p.ModelInfo:
        return p.ModelInfo(
            model="scripted", path="", family="x", quant="none", device="cpu", dtype="f"
        )

    def chat(self, messages, sampling, *, on_text, cancelled, **_options) -> GenerationResult:
        if messages[-1].text == "fail":
            raise BadInput("that input is bad")
        if messages[-1].text == "crash":
            raise ZeroDivisionError("bug")
        self.started.set()
        produced = []
        for index in range(min(self.words, sampling.max_new_tokens)):
            if cancelled():
                return GenerationResult(text=" ".join(produced), reason="cancelled")
            produced.append(f"w{index}")
            on_text(f"w{index} ")
            time.sleep(0.01)
        return GenerationResult(text=" ".join(produced), reason="done")

    def close(self) -> None:
        pass


class ScriptedRuntime(Runtime):
    def __init__(self, backend: ScriptedBackend) -> None:
        super().__init__()
        self.backend = backend
        self._devices = [p.DeviceInfo(kind="cpu", name="cpu")]


class Recorder:
    def __init__(self) -> None:
        self.events: list[p.Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: p.Event) -> None:
        with self.lock:
            self.events.append(event)

    def finished(self) -> dict[str, p.Finished]:
        return {e.job_id: e for e in self.events if isinstance(e, p.Finished)}

    def wait_finished(self, job_id: str, timeout: float = 10.0) -> p.Finished:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if job_id in self.finished():
                return self.finished()[job_id]
            time.sleep(0.005)
        raise AssertionError(f"job {job_id} never finished")


@pytest.fixture(autouse=True, scope="module")
def _transformers_imported() -> None:
    """A local job imports transformers first; done here, it is not timed with the jobs."""
    import_transformers()


def chat(job_id: str, text: str = "hi", max_new_tokens: int = 1000) -> p.Chat:
    return p.Chat(
        job_id=job_id,
        messages=[p.ChatMessage(role="user", text=text)],
        sampling=p.Sampling(max_new_tokens=max_new_tokens),
    )


def make_core() -> tuple[Core, Recorder, ScriptedBackend]:
    recorder = Recorder()
    backend = ScriptedBackend()
    return Core(recorder, ScriptedRuntime(backend)), recorder, backend


def test_a_job_streams_deltas_then_finishes_once_with_its_result() -> None:
    core, events, _ = make_core()
    core.handle(chat("a", max_new_tokens=5))
    finished = events.wait_finished("a")
    assert finished.reason == "done"
    deltas = "".join(e.text for e in events.events if isinstance(e, p.Delta))
    assert deltas == "w0 w1 w2 w3 w4 "
    assert finished.result is not None and finished.result["text"] == "w0 w1 w2 w3 w4"
    assert finished.result["backend"] == "scripted"
    core.close()


def test_cancel_mid_stream_ends_the_job_cancelled_and_the_next_job_runs() -> None:
    core, events, backend = make_core()
    core.handle(chat("long"))
    assert backend.started.wait(5)
    core.handle(p.Cancel(job_id="long"))
    core.handle(p.Cancel(job_id="long"))  # idempotent
    assert events.wait_finished("long", timeout=2).reason == "cancelled"
    core.handle(chat("next", max_new_tokens=2))
    assert events.wait_finished("next").reason == "done"
    core.handle(p.Cancel(job_id="long"))  # cancelling a finished job is a no-op
    core.handle(p.Cancel(job_id="never-existed"))
    core.close()
    counts = Counter(e.job_id for e in events.events if isinstance(e, p.Finished))
    assert counts == {"long": 1, "next": 1}


def test_a_queued_job_cancelled_before_it_starts_never_runs() -> None:
    core, events, backend = make_core()
    core.handle(chat("first"))
    assert backend.started.wait(5)
    core.handle(chat("queued"))
    core.handle(p.Cancel(job_id="queued"))
    core.handle(p.Cancel(job_id="first"))
    assert events.wait_finished("queued").reason == "cancelled"
    assert not any(isinstance(e, p.Delta) and e.job_id == "queued" for e in events.events)
    core.close()


def test_a_failing_job_reports_its_code_and_the_engine_keeps_serving() -> None:
    core, events, _ = make_core()
    core.handle(chat("bad", "fail"))
    core.handle(chat("bug", "crash"))
    core.handle(chat("good", max_new_tokens=1))
    bad, bug, good = (events.wait_finished(j) for j in ("bad", "bug", "good"))
    assert (bad.reason, bad.error_code, bad.message) == ("error", "bad_input", "that input is bad")
    assert (
        bug.reason == "error"
        and bug.error_code == "internal"
        and "ZeroDivisionError" in bug.message
    )
    assert good.reason == "done"
    core.close()


def test_a_duplicate_job_id_is_a_protocol_error_not_a_second_job() -> None:
    core, events, backend = make_core()
    core.handle(chat("same"))
    assert backend.started.wait(5)
    core.handle(chat("same"))
    core.handle(p.Cancel(job_id="same"))
    events.wait_finished("same")
    core.close()
    assert any(isinstance(e, p.ProtocolError) for e in events.events)
    assert sum(isinstance(e, p.Finished) for e in events.events) == 1


def test_close_ends_every_open_job_exactly_once() -> None:
    core, events, backend = make_core()
    core.handle(chat("running"))
    assert backend.started.wait(5)
    core.handle(chat("waiting"))
    core.close()
    finished = events.finished()
    assert set(finished) == {"running", "waiting"}
    assert all(f.reason == "cancelled" for f in finished.values())
    assert sum(isinstance(e, p.Finished) for e in events.events) == 2


def test_chat_without_a_model_asks_for_one() -> None:
    events = Recorder()
    runtime = Runtime()
    runtime._devices = [p.DeviceInfo(kind="cpu", name="cpu")]
    core = Core(events, runtime)
    core.handle(chat("x"))
    finished = events.wait_finished("x")
    assert finished.error_code == "no_model_loaded" and "model" in finished.message
    core.close()


def test_a_model_that_fails_to_load_leaves_the_engine_idle_and_says_so(tmp_path) -> None:
    """The window shows "Loading model…" from the status events; a failed load must end it."""
    events = Recorder()
    runtime = Runtime()
    runtime._devices = [p.DeviceInfo(kind="cpu", name="cpu")]
    core = Core(events, runtime)
    command = chat("x")
    command.model, command.device = str(tmp_path / "gone"), "cpu"
    core.handle(command)
    assert events.wait_finished("x").error_code == "model_not_found"
    states = [e.state for e in events.events if isinstance(e, p.EngineStatus)]
    assert states[-1] == "idle" and "loading" in states
    core.close()


def test_an_io_lane_job_runs_beside_a_model_job_instead_of_waiting_for_it() -> None:
    from engine import capabilities

    release = threading.Event()

    class SlowListing(p.Command, tag="test_slow_listing"):
        job_id: str

    def run_listing(job, command, runtime):
        release.wait(5)
        return {"listed": True}

    capabilities.register(SlowListing, run_listing)
    capabilities.IO_LANE.add(SlowListing)
    try:
        core, events, backend = make_core()
        core.handle(SlowListing(job_id="io"))
        core.handle(chat("chat", max_new_tokens=3))
        assert events.wait_finished("chat").reason == "done"  # not stuck behind the listing
        assert "io" not in events.finished()
        release.set()
        assert events.wait_finished("io").result == {"listed": True}
        core.close()
    finally:
        capabilities.HANDLERS.pop(SlowListing, None)
        capabilities.IO_LANE.discard(SlowListing)


def test_fast_text_is_sent_in_fewer_deltas_that_add_up_before_the_end() -> None:
    from engine.core import Job

    events: list[p.Event] = []
    job = Job("fast", "chat", events.append)
    pieces = [f"w{index} " for index in range(500)]
    for piece in pieces:
        job.delta(piece)  # far faster than the client needs them
    job.partial({"page": 1})
    job.delta("tail")
    job.finish("done", result={})
    deltas = [event for event in events if isinstance(event, p.Delta)]
    assert 1 < len(deltas) < 50
    assert deltas[0].text == pieces[0]  # the first piece goes out at once (time to first token)
    assert "".join(d.text for d in deltas) == "".join(pieces) + "tail"
    kinds = [type(event).__name__ for event in events]
    assert kinds.index("PartialResult") > kinds.index("Delta")  # order kept around other events
    assert kinds[-1] == "Finished" and kinds[-2] == "Delta"


def test_jobs_started_together_in_a_fresh_engine_share_the_first_import_of_transformers(
    tiny_model,
) -> None:
    from engine.protocol import models as pm
    from tests.engine.harness import EngineHarness

    model = str(tiny_model("llava"))
    engine = EngineHarness()  # a new process: nothing imported yet
    try:
        jobs = [
            pm.ListInstalled(job_id="list-1", folders=[model]),
            pm.PlanMemory(job_id="plan", model=model, device="cpu"),
            pm.ListInstalled(job_id="list-2", folders=[model]),
        ]
        for job in jobs:  # sent at once, as a window does when the engine says Welcome
            engine.send(job)
        finished: dict[str, p.Finished] = {}
        while len(finished) < len(jobs):
            event = engine.next_event(timeout=120)
            if isinstance(event, p.Finished):
                finished[event.job_id] = event
        assert all(f.reason == "done" for f in finished.values()), finished
    finally:
        engine.close()
