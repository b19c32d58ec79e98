"""The rest of the cloud errors, each a distinct code on ``finished`` and none fatal to the engine:
quota, refusal, server errors (bounded retries), network down, mid-stream stalls, missing keys."""

from __future__ import annotations

import socket
import time

import pytest

from engine import protocol as p
from engine.protocol import cloud as c
from tests.engine.harness import job_id
from tests.engine.wire import anthropic_server, openai_server
from tests.engine.wire.server import Reply, sse
from tests.engine.wire.stack import KEYS, CloudStack, deltas, finished


def ask(provider: str, base_url: str | None = None) -> p.Chat:
    return p.Chat(
        job_id=job_id(),
        messages=[p.ChatMessage(role="user", text="Describe it.")],
        backend=provider,
        base_url=base_url,
        sampling=p.Sampling(max_new_tokens=32),
    )


def posts(stack: CloudStack, provider: str) -> int:
    return sum(1 for r in stack.servers[provider].requests if r.method == "POST")


QUOTA = {
    "anthropic": anthropic_server.error(
        400, "invalid_request_error", "Your credit balance is too low to access the API."
    ),
    "openai": openai_server.error(
        429, "insufficient_quota", "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
}  # fmt: skip


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
def test_an_exhausted_quota_is_quota_exhausted_and_not_retried(engine, stack, provider) -> None:
    reply = QUOTA.get(provider) or stack.gemini.quota_exhausted()
    stack.servers[provider].script.append(reply)
    end = finished(engine.run_all(ask(provider)))
    assert (end.reason, end.error_code) == ("error", c.QUOTA_EXHAUSTED)
    assert posts(stack, provider) == 1


def _anthropic_refusal() -> Reply:
    start = {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
             "model": "m", "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": 5, "output_tokens": 0}}}  # fmt: skip
    stop = {"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": None},
            "usage": {"output_tokens": 0}}  # fmt: skip
    return Reply(events=[sse(start, "message_start"), sse(stop, "message_delta"),
                         sse({"type": "message_stop"}, "message_stop")])  # fmt: skip


def _openai_content_filter() -> Reply:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5.5",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}  # fmt: skip
    return Reply(events=[sse(chunk), b"data: [DONE]\n\n"])


def _gemini_blocked() -> Reply:
    return Reply(events=[sse({"promptFeedback": {"blockReason": "SAFETY"}})])


@pytest.mark.parametrize(
    ("provider", "reply"),
    [("anthropic", _anthropic_refusal()), ("openai", _openai_content_filter()),
     ("gemini", _gemini_blocked())],
)  # fmt: skip
def test_refused_content_is_content_refused(engine, stack, provider, reply) -> None:
    stack.servers[provider].script.append(reply)
    end = finished(engine.run_all(ask(provider)))
    assert (end.reason, end.error_code) == ("error", c.CONTENT_REFUSED)


def test_server_errors_are_retried_a_bounded_number_of_times_then_reported(engine, stack) -> None:
    failure = openai_server.error(500, "server_error", "internal", "The server had an error.")
    stack.openai.script.extend([failure, failure, failure, failure])
    end = finished(engine.run_all(ask("openai")))
    assert (end.reason, end.error_code) == ("error", c.SERVER_ERROR)
    assert posts(stack, "openai") == 3  # the first try and VISIONDESK_CLOUD_MAX_RETRIES=2


def test_an_overloaded_server_is_retried_and_the_answer_arrives(engine, stack) -> None:
    overloaded = anthropic_server.error(529, "overloaded_error", "Overloaded")
    stack.anthropic.script.append(overloaded)
    end = finished(engine.run_all(ask("anthropic")))
    assert end.reason == "done", end.message
    assert posts(stack, "anthropic") == 2


def test_a_retry_after_beyond_the_limit_is_reported_at_once_with_the_wait(engine, stack) -> None:
    stack.anthropic.script.append(stack.anthropic.rate_limit(600))
    started = time.monotonic()
    end = finished(engine.run_all(ask("anthropic")))
    assert end.error_code == c.RATE_LIMITED and "wait 600 s" in end.message
    assert time.monotonic() - started < 5 and posts(stack, "anthropic") == 1


def test_an_unreachable_server_is_network_down(engine) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    end = finished(engine.run_all(ask("remote", f"http://127.0.0.1:{port}/v1")))
    assert (end.reason, end.error_code) == ("error", c.NETWORK_DOWN)


def test_a_stream_that_stalls_midway_keeps_what_was_streamed_and_ends_with_timeout(
    engine, stack
) -> None:
    def chunk(text: str) -> bytes:
        return sse({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5.5",
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})  # fmt: skip

    stack.openai.script.append(
        Reply(events=[chunk("Half "), chunk("an answer")], stall_after_events=1)
    )
    events = engine.run_all(ask("openai"))
    end = finished(events)
    assert (end.reason, end.error_code) == ("error", c.TIMEOUT)
    assert deltas(events) == ["Half "]
    assert posts(stack, "openai") == 1  # text had reached the user: no retry, no duplicate
    # The text shown says who wrote it, though the answer failed.
    assert end.result == {"backend": "openai", "model": "gpt-5.5"}


def test_cancel_while_waiting_to_retry_ends_the_job_as_cancelled(engine, stack) -> None:
    stack.gemini.script.append(stack.gemini.rate_limit(20))
    command = ask("gemini")
    engine.send(command)
    for event in engine.job_events(command.job_id):
        if isinstance(event, p.Progress) and event.stage == "waiting":
            engine.send(p.Cancel(job_id=command.job_id))
        if isinstance(event, p.Finished):
            assert event.reason == "cancelled"
            break
    assert posts(stack, "gemini") == 1


def test_no_key_anywhere_is_missing_key_and_no_request_is_made(engine, stack) -> None:
    stack.write_keys({k: v for k, v in KEYS.items() if k != "anthropic"})
    end = finished(engine.run_all(ask("anthropic")))
    assert (end.reason, end.error_code) == ("error", c.MISSING_KEY)
    assert "Settings" in end.message and "ANTHROPIC_API_KEY" in end.message
    assert stack.anthropic.requests == []


def test_an_unknown_provider_model_is_a_model_problem(engine, stack) -> None:
    command = ask("openai")
    command.backend_model = "gpt-nonexistent"
    end = finished(engine.run_all(command))
    assert (end.reason, end.error_code) == ("error", p.ErrorCode.MODEL_NOT_FOUND)


def test_the_engine_still_answers_after_every_failure(engine, stack) -> None:
    end = finished(engine.run_all(ask("gemini")))
    assert end.reason == "done", end.message
    assert engine.proc.poll() is None
