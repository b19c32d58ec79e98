"""The protocol: every message survives a round trip; bad lines are rejected with a reason."""

from __future__ import annotations

import msgspec
import pytest

from engine import protocol as p

COMMANDS: list[p.Command] = [
    p.Hello(protocol_version=p.PROTOCOL_VERSION, client="test"),
    p.LoadModel(job_id="j1", model="/models/x", quant="nf4", device="cpu"),
    p.Chat(
        job_id="j2",
        messages=[
            p.ChatMessage(role="system", text="be brief"),
            p.ChatMessage(role="user", text="what is this?", images=["/a.png", "/b.jpg"]),
            p.ChatMessage(role="assistant", text="a cat"),
            p.ChatMessage(role="user", text="and that?"),
        ],
        sampling=p.Sampling(temperature=0.7, top_p=0.9, max_new_tokens=17, seed=3),
        model="org/name",
    ),
    p.Cancel(job_id="j2"),
    p.Unload(job_id="j3"),
    p.GetStatus(),
    p.Shutdown(),
]

EVENTS: list[p.Event] = [
    p.Welcome(
        protocol_version=1,
        engine_version="x",
        pid=1,
        devices=[p.DeviceInfo(kind="cuda", name="GPU", total_memory=8, free_memory=4)],
    ),
    p.JobStarted(job_id="j", kind="chat"),
    p.Delta(job_id="j", text="héllo ✓\n"),
    p.Progress(job_id="j", stage="loading", current=1, total=3, message="m"),
    p.PartialResult(job_id="j", data={"a": [1, 2]}),
    p.Finished(job_id="j", reason="error", error_code="bad_input", message="nope"),
    p.Finished(job_id="j", reason="done", result={"text": "x", "n": 1}),
    p.EngineStatus(
        state="busy",
        loaded=p.ModelInfo(
            model="m", path="/m", family="llava", quant="nf4", device="cpu", dtype="f"
        ),
    ),
    p.ProtocolError(code="malformed", message="bad", line="{"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips_as_one_line(command: p.Command) -> None:
    line = p.encode(command)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert p.decode_command(line) == command


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_as_one_line(event: p.Event) -> None:
    line = p.encode(event)
    assert line.count(b"\n") == 1
    assert p.decode_event(line) == event


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"{}",
        b'{"type": "no_such_command"}',
        b'{"type": "chat", "job_id": "x"}',  # missing messages
        b'{"type": "chat", "job_id": 5, "messages": []}',  # wrong type
        b'{"type": "cancel", "job_id": "x", "extra": ',  # truncated
        b'{"type": "load_model", "job_id": "x", "model": "m", "quant": "fp3"}',  # bad enum
    ],
)
def test_malformed_commands_raise_a_decode_error_with_a_reason(line: bytes) -> None:
    with pytest.raises(p.DecodeError) as info:
        p.decode_command(line)
    assert str(info.value)


def test_unknown_fields_are_ignored_so_newer_peers_can_add_fields() -> None:
    line = b'{"type": "cancel", "job_id": "x", "added_in_a_later_version": 1}'
    assert p.decode_command(line) == p.Cancel(job_id="x")


def test_defaults_fill_fields_an_older_peer_does_not_send() -> None:
    command = p.decode_command(
        b'{"type":"chat","job_id":"a","messages":[{"role":"user","text":"hi"}]}'
    )
    assert isinstance(command, p.Chat)
    assert command.sampling == p.Sampling() and command.model is None
    assert command.messages[0].images == []


def test_commands_and_events_use_distinct_tags() -> None:
    command_tags = {type(c).__struct_config__.tag for c in COMMANDS}
    event_tags = {type(e).__struct_config__.tag for e in EVENTS}
    assert not command_tags & event_tags
    assert isinstance(msgspec.json.decode(p.encode(COMMANDS[0])), dict)
