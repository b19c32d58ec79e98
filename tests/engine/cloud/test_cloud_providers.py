"""Each cloud backend through the real engine and the real SDK, against a local server speaking
that provider's wire format: streaming chat, images, retries, and every error a person can act on.
"""

from __future__ import annotations

import time

import pytest
from PIL import Image

from engine import protocol as p
from engine.protocol import cloud as c
from tests.engine.harness import job_id
from tests.engine.wire.server import Reply
from tests.engine.wire.stack import KEYS, REMOTE_MODEL, CloudStack, deltas, finished

PROVIDERS = ["anthropic", "openai", "gemini", "remote"]
DEFAULT_MODEL = {**c.DEFAULT_MODELS, "remote": REMOTE_MODEL}
INPUT_TOKENS = {"anthropic": 37, "openai": 41, "gemini": 29, "remote": 41}  # what each server says


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    png, jpg = folder / "red.png", folder / "green.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(png)
    Image.new("RGB", (40, 90), (20, 160, 60)).save(jpg)
    return [str(png), str(jpg)]


def chat(stack: CloudStack, provider: str, messages: list[p.ChatMessage], **fields) -> p.Chat:
    return p.Chat(
        job_id=job_id(),
        messages=messages,
        backend=provider,
        base_url=stack.remote_url if provider == "remote" else None,
        sampling=p.Sampling(max_new_tokens=64),
        **fields,
    )


def ask(stack: CloudStack, provider: str, text: str = "What is this?", images=()) -> p.Chat:
    return chat(stack, provider, [p.ChatMessage(role="user", text=text, images=list(images))])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_one_image_chat_streams_deltas_and_records_who_answered_and_tokens(
    engine, stack, images, provider
) -> None:
    stack.servers[provider].pace_s = 0.03  # deltas leave the server one by one
    events = engine.run_all(ask(stack, provider, images=[images[0]]))
    end = finished(events)
    assert end.reason == "done", end.message
    pieces = deltas(events)
    assert len(pieces) >= 3, "the answer was not streamed"
    assert "".join(pieces) == end.result["text"]
    assert "received 1 image(s): 64x48" in end.result["text"]  # the image arrived, decodable
    assert end.result["backend"] == provider
    assert end.result["model"] == DEFAULT_MODEL[provider]
    assert end.result["why"] == "chosen for this request"
    assert end.result["input_tokens"] == INPUT_TOKENS[provider]
    assert end.result["output_tokens"] > 0
    routing = [e for e in events if isinstance(e, p.Progress) and e.stage == "routing"]
    assert routing and DEFAULT_MODEL[provider] in routing[0].message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_multi_image_multi_turn_conversation_sends_every_image_and_the_system_prompt(
    engine, stack, images, provider
) -> None:
    messages = [
        p.ChatMessage(role="system", text="Answer briefly."),
        p.ChatMessage(role="user", text="Compare these.", images=images),
        p.ChatMessage(role="assistant", text="One is red, one is green."),
        p.ChatMessage(role="user", text="And this one?", images=[images[0]]),
    ]
    end = finished(engine.run_all(chat(stack, provider, messages)))
    assert end.reason == "done", end.message
    assert (
        "received 3 image(s): 64x48, 40x90, 64x48. You asked: And this one?" in end.result["text"]
    )
    body = stack.servers[provider].requests[-1].body
    if provider == "anthropic":
        assert body["system"] == "Answer briefly."
    elif provider == "gemini":
        assert body["systemInstruction"]["parts"][0]["text"] == "Answer briefly."
    else:
        assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_backend_model_names_the_provider_model(engine, stack, provider) -> None:
    model = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4o", "gemini": "gemini-2.5-pro"}
    wanted = model.get(provider, REMOTE_MODEL)
    end = finished(engine.run_all(chat(stack, provider, ask(stack, provider).messages,
                                       backend_model=wanted)))  # fmt: skip
    assert end.reason == "done", end.message
    assert end.result["model"] == wanted
    request = stack.servers[provider].requests[-1]
    assert wanted in request.path if provider == "gemini" else request.body["model"] == wanted


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_with_retry_after_is_retried_after_the_asked_wait(
    engine, stack, provider
) -> None:
    server = stack.servers[provider]
    server.script.append(server.rate_limit(0.4))  # type: ignore[attr-defined]
    events = engine.run_all(ask(stack, provider))
    end = finished(events)
    assert end.reason == "done", end.message
    # One refused request and its retry (the remote server's model lookup comes first, and is
    # the request refused there).
    assert len(server.requests) == (3 if provider == "remote" else 2)
    refused, retried = server.requests[:2]
    assert refused.path == retried.path
    # The retry waited what the server asked (0.4 s), not the 0.05 s backoff of the test setup.
    assert retried.at - refused.at >= 0.38
    waiting = [e for e in events if isinstance(e, p.Progress) and e.stage == "waiting"]
    assert waiting and "Retrying in 0.4 s" in waiting[0].message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_rejected_key_ends_the_job_with_invalid_key_and_never_echoes_it(
    engine, stack, provider
) -> None:
    stack.servers[provider].key = "a-different-key-entirely"
    end = finished(engine.run_all(ask(stack, provider)))
    assert (end.reason, end.error_code) == ("error", c.INVALID_KEY)
    assert "rejected" in end.message and KEYS[provider] not in end.message
    assert KEYS[provider][:3] + "***" not in end.message  # OpenAI quotes the key's start back
    assert len(stack.servers[provider].requests) == 1  # a bad key is not retried


def test_gemini_http_401_is_invalid_key_too(engine, stack) -> None:
    stack.gemini.script.append(stack.gemini.unauthenticated())
    end = finished(engine.run_all(ask(stack, "gemini")))
    assert end.error_code == c.INVALID_KEY


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_server_that_stalls_ends_with_a_timeout_error(engine, stack, provider) -> None:
    stack.servers[provider].script.append(Reply(stall_s=15))
    started = time.monotonic()
    end = finished(engine.run_all(ask(stack, provider)))
    assert (end.reason, end.error_code) == ("error", c.TIMEOUT)
    assert "did not answer within 2 s" in end.message
    assert time.monotonic() - started < 10  # the SDK timeout, not the stall, ended it


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_malformed_response_is_an_error_and_the_engine_keeps_serving(
    engine, stack, provider
) -> None:
    server = stack.servers[provider]
    server.script.append(server.garbage())  # type: ignore[attr-defined]
    end = finished(engine.run_all(ask(stack, provider)))
    assert (end.reason, end.error_code) == ("error", c.MALFORMED_RESPONSE)
    again = finished(engine.run_all(ask(stack, provider)))
    assert again.reason == "done", again.message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_model_list_and_connection_test_come_from_the_provider(engine, stack, provider) -> None:
    base_url = stack.remote_url if provider == "remote" else None
    listed = finished(
        engine.run_all(c.ListProviderModels(job_id=job_id(), provider=provider, base_url=base_url))
    )
    assert listed.reason == "done", listed.message
    ids = [m["id"] for m in listed.result["models"]]
    assert DEFAULT_MODEL[provider] in ids and listed.result["default"] == DEFAULT_MODEL[provider]
    assert not any("embedding" in i for i in ids)  # only models that can chat
    tested = finished(
        engine.run_all(c.TestConnection(job_id=job_id(), provider=provider, base_url=base_url))
    )
    assert tested.reason == "done" and tested.result["ok"] is True
    stack.servers[provider].key = "wrong"
    failed = finished(
        engine.run_all(c.TestConnection(job_id=job_id(), provider=provider, base_url=base_url))
    )
    assert failed.error_code == c.INVALID_KEY
