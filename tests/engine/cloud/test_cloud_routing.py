"""The routing policy: which backend answers, when the cloud may be used, and the reason recorded."""

from __future__ import annotations

import keyring
import pytest
from PIL import Image

from engine import protocol as p
from engine.core import Job
from engine.errors import BadInput, EngineError, OutOfMemory
from engine.protocol import cloud as c
from engine.routing import plan_route, provenance, run_routed
from engine.runtime import Runtime
from tests.engine.harness import job_id
from tests.engine.wire.keyring_file import JsonFileKeyring
from tests.engine.wire.stack import KEYS, REMOTE_MODEL, finished

ANTHROPIC_DEFAULT = c.DEFAULT_MODELS["anthropic"]


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pictures") / "blue.png"
    Image.new("RGB", (64, 48), (30, 90, 200)).save(path)
    return str(path)


def ask(picture: str, **fields) -> p.Chat:
    fields.setdefault("sampling", p.Sampling(max_new_tokens=8))
    return p.Chat(
        job_id=job_id(),
        messages=[p.ChatMessage(role="user", text="What is this?", images=[picture])],
        **fields,
    )


# --- the plan, without running anything ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "first", "fallback", "why"),
    [
        ({}, "local", None, "local only"),
        ({"backend": "local"}, "local", None, "local only"),
        ({"backend": "openai"}, "openai", None, "chosen for this request"),
        ({"backend": "gemini", "policy": "cloud_only"}, "gemini", None, "policy: cloud only"),
        ({"policy": "remote", "base_url": "http://box:8000"}, "remote", None, "policy: remote server"),
        ({"backend": "anthropic", "policy": "local_then_cloud"}, "local", "anthropic", "the local model answered"),
        ({"backend": "openai", "policy": "local_then_ask"}, "local", "openai", "the local model answered"),
        ({"backend": "anthropic", "policy": "local_then_cloud", "never_send": True}, "local", None,
         "marked never send: local only"),
    ],
)  # fmt: skip
def test_the_plan_for_each_policy(fields, first, fallback, why) -> None:
    plan = plan_route(p.Chat(job_id="j", messages=[], **fields))
    assert plan.first.provider == first
    assert (plan.fallback.provider if plan.fallback else None) == fallback
    assert plan.why == why
    assert plan.ask_first == (fields.get("policy") == "local_then_ask")


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"backend": "anthropic", "policy": "local_only"}, p.ErrorCode.CLOUD_NOT_ALLOWED),
        ({"backend": "openai", "never_send": True}, p.ErrorCode.CLOUD_NOT_ALLOWED),
        ({"policy": "remote", "base_url": "http://box", "never_send": True}, p.ErrorCode.CLOUD_NOT_ALLOWED),
        ({"policy": "local_then_cloud"}, p.ErrorCode.BAD_INPUT),  # which cloud?
        ({"policy": "remote"}, p.ErrorCode.BAD_INPUT),  # which server?
        ({"policy": "everywhere"}, p.ErrorCode.BAD_INPUT),
        ({"backend": "skynet"}, p.ErrorCode.BAD_INPUT),
    ],
)  # fmt: skip
def test_contradictory_or_incomplete_routing_is_refused_with_a_reason(fields, code) -> None:
    with pytest.raises(EngineError) as refused:
        plan_route(p.Chat(job_id="j", messages=[], **fields))
    assert refused.value.code == code and refused.value.message


# --- fallbacks through the engine ----------------------------------------------------------------


def test_local_then_cloud_falls_back_when_the_local_model_is_not_installed_and_says_why(
    engine, stack, picture, tmp_path
) -> None:
    events = engine.run_all(
        ask(picture, model=str(tmp_path / "no-such-model"), device="cpu",
            backend="anthropic", policy="local_then_cloud")
    )  # fmt: skip
    end = finished(events)
    assert end.reason == "done", end.message
    assert end.result["backend"] == "anthropic" and end.result["model"] == ANTHROPIC_DEFAULT
    assert end.result["why"] == "the local model is not installed"
    assert end.result["route"] == f"Claude {ANTHROPIC_DEFAULT} — the local model is not installed"
    routing = [e.message for e in events if isinstance(e, p.Progress) and e.stage == "routing"]
    assert routing == [end.result["route"]]
    assert len(stack.anthropic.requests) == 1


def test_local_then_cloud_without_a_usable_gpu_goes_to_the_cloud(
    engine, stack, picture, tiny_model
) -> None:
    if any(device.kind in ("cuda", "mps") for device in engine.welcome.devices):
        pytest.skip("this machine has a GPU")
    end = finished(engine.run_all(
        ask(picture, model=str(tiny_model("llava")), backend="gemini", policy="local_then_cloud")
    ))  # fmt: skip
    assert end.reason == "done", end.message
    assert (end.result["backend"], end.result["why"]) == ("gemini", "no usable GPU")


def test_local_then_cloud_uses_the_local_model_when_it_works_and_sends_nothing(
    engine, stack, picture, tiny_model
) -> None:
    end = finished(engine.run_all(
        ask(picture, model=str(tiny_model("llava")), device="cpu", quant="none",
            backend="anthropic", policy="local_then_cloud")
    ), )  # fmt: skip
    assert end.reason in ("done", "length"), end.message
    assert (end.result["backend"], end.result["why"]) == ("local", "the local model answered")
    assert stack.request_count() == 0


def test_a_bad_file_never_falls_back_to_the_cloud(engine, stack, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    end = finished(engine.run_all(ask(str(broken), backend="openai", policy="local_then_cloud")))
    assert end.error_code == p.ErrorCode.BAD_INPUT
    assert stack.request_count() == 0


def test_local_then_ask_stops_for_consent_and_a_yes_sends_it(
    engine, stack, picture, tmp_path
) -> None:
    missing = str(tmp_path / "no-such-model")
    events = engine.run_all(
        ask(picture, model=missing, device="cpu", backend="openai", policy="local_then_ask")
    )
    end = finished(events)
    assert (end.reason, end.error_code) == ("error", c.CONSENT_NEEDED)
    assert "OpenAI" in end.message and "not installed" in end.message
    [question] = [e.data["consent_needed"] for e in events if isinstance(e, p.PartialResult)]
    assert question == {
        "backend": "openai",
        "model": None,
        "why": "the local model is not installed",
    }
    assert stack.request_count() == 0
    # The user said yes: the same request, sent to the provider for this once.
    yes = finished(engine.run_all(ask(picture, backend="openai", policy="cloud_only")))
    assert yes.reason == "done" and yes.result["backend"] == "openai"


def test_the_remote_policy_uses_the_servers_model_and_token(engine, stack, picture) -> None:
    end = finished(engine.run_all(ask(picture, policy="remote", base_url=stack.remote.origin)))
    assert end.reason == "done", end.message
    assert (end.result["backend"], end.result["model"]) == ("remote", REMOTE_MODEL)
    assert [r.path for r in stack.remote.requests] == ["/v1/models", "/v1/chat/completions"]
    assert stack.remote.requests[-1].headers["authorization"] == f"Bearer {KEYS['remote']}"


# --- out of memory, in process (a real OOM is not something a test can order) -------------------


def test_out_of_memory_locally_falls_back_and_the_key_can_come_from_the_environment(
    stack, monkeypatch, tmp_path
) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(JsonFileKeyring(tmp_path / "empty-keyring.json"))  # never the real one
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEYS["anthropic"])
    monkeypatch.setenv("ANTHROPIC_BASE_URL", stack.anthropic.origin)
    monkeypatch.setenv("VISIONDESK_CLOUD_TIMEOUT_S", "2")
    events: list[p.Event] = []
    job = Job("j1", "chat", events.append)
    request = p.Chat(job_id="j1", messages=[p.ChatMessage(role="user", text="hi")], device="cpu",
                     backend="anthropic", policy="local_then_cloud")  # fmt: skip

    def local(why: str) -> str:
        raise OutOfMemory("CUDA out of memory")

    def cloud(backend, why: str) -> dict:
        generation = backend.chat(request.messages, request.sampling, on_text=job.delta,
                                  cancelled=lambda: job.cancelled)  # fmt: skip
        assert backend.key.source == "ANTHROPIC_API_KEY"
        return provenance(backend, why, generation)

    try:
        result = run_routed(job, request, Runtime(), local=local, cloud=cloud)
    finally:
        keyring.set_keyring(previous)
    assert result["why"] == "the local model ran out of memory"
    assert result["backend"] == "anthropic" and result["input_tokens"] == 37
    assert any(isinstance(e, p.Delta) for e in events)


def test_a_local_failure_that_is_the_users_input_is_raised_not_routed() -> None:
    job = Job("j2", "chat", lambda event: None)
    request = p.Chat(job_id="j2", messages=[], device="cpu", backend="openai",
                     policy="local_then_cloud")  # fmt: skip

    def local(why: str) -> str:
        raise BadInput("That file is not an image.")

    with pytest.raises(BadInput):
        run_routed(job, request, Runtime(), local=local, cloud=lambda b, w: pytest.fail("sent"))


def test_a_cloud_chat_does_not_wait_for_a_local_generation(
    engine, stack, picture, tiny_model
) -> None:
    local = ask(
        picture,
        model=str(tiny_model("llava")),
        device="cpu",
        sampling=p.Sampling(max_new_tokens=900),
    )
    cloud = ask(picture, backend="openai")
    engine.send(local)
    order: list[str] = []
    sent = False
    while len(order) < 2:
        event = engine.next_event(timeout=120)
        if not sent and isinstance(event, p.Delta) and event.job_id == local.job_id:
            engine.send(cloud)  # the local model is generating
            sent = True
        if isinstance(event, p.Finished) and event.job_id in (local.job_id, cloud.job_id):
            order.append("cloud" if event.job_id == cloud.job_id else "local")
            if event.job_id == cloud.job_id:
                assert event.reason == "done", event.message
                assert event.result is not None and event.result["backend"] == "openai"
                engine.send(p.Cancel(job_id=local.job_id))
    assert order == ["cloud", "local"], "the cloud answer waited for the local one"
