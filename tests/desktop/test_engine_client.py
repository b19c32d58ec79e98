"""EngineClient against the scripted fake engine: handshake, jobs, and every way an engine fails."""

from __future__ import annotations

from pathlib import Path

from desktop.engine_client import EngineExit, EnginePhase
from engine import protocol as p
from tests.desktop.helpers import sent_commands

MESSAGES = [p.ChatMessage(role="user", text="hi")]


def test_handshake_sends_hello_first_and_reports_welcome(
    qtbot, make_client, command_log: Path
) -> None:
    client = make_client()
    with qtbot.waitSignal(client.welcome_received, timeout=15_000) as welcome:
        client.start()
    assert client.phase == EnginePhase.READY
    assert welcome.args[0].protocol_version == p.PROTOCOL_VERSION
    assert client.engine_pid() == welcome.args[0].pid
    first = sent_commands(command_log)[0]
    assert first == p.Hello(protocol_version=p.PROTOCOL_VERSION, client="desktop")


def test_a_chat_sent_before_the_engine_is_ready_is_queued_then_streams(qtbot, make_client) -> None:
    client = make_client()
    deltas: list[str] = []
    client.delta_received.connect(lambda job_id, text: deltas.append(text))
    job_id = client.start_chat(MESSAGES, model="m")  # not started yet: queued
    with qtbot.waitSignal(client.job_finished, timeout=15_000) as finished:
        client.start()
    assert finished.args[0].job_id == job_id
    assert finished.args[0].reason == "done"
    assert "".join(deltas) == finished.args[0].result["text"]
    assert client.open_jobs() == set()


def test_version_mismatch_is_a_clear_failure_not_a_restart_loop(qtbot, make_client) -> None:
    client = make_client("--protocol-version", "999")
    died: list[EngineExit] = []
    client.engine_died.connect(died.append)
    job_id = client.start_chat(MESSAGES, model="m")
    finished: list[p.Finished] = []
    client.job_finished.connect(finished.append)
    with qtbot.waitSignal(client.engine_failed, timeout=15_000) as failed:
        client.start()
    assert "protocol" in failed.args[0]
    assert client.phase == EnginePhase.FAILED
    assert died == []  # not treated as a crash
    assert [(f.job_id, f.error_code) for f in finished] == [(job_id, p.ErrorCode.ENGINE_DIED)]
    qtbot.wait(300)
    assert client.engine_pid() is None  # and nothing was restarted


def test_no_welcome_in_time_kills_restarts_and_finally_gives_up(qtbot, make_client) -> None:
    client = make_client("--hang-handshake", handshake_timeout_ms=500, max_start_failures=2)
    died: list[EngineExit] = []
    client.engine_died.connect(died.append)
    with qtbot.waitSignal(client.engine_failed, timeout=15_000):
        client.start()
    assert [d.reason for d in died] == ["handshake_timeout", "handshake_timeout"]
    assert client.phase == EnginePhase.FAILED
    assert "did not answer in time" in died[0].sentence()


def test_a_crash_mid_job_ends_the_job_once_and_a_new_engine_takes_over(
    qtbot, make_client, tmp_path: Path
) -> None:
    client = make_client("--crash-on-chat", str(tmp_path / "crashed"))
    client.start()
    qtbot.waitUntil(client.is_ready, timeout=15_000)
    first_pid = client.engine_pid()
    finished: list[p.Finished] = []
    client.job_finished.connect(finished.append)
    with qtbot.waitSignals([client.engine_died, client.engine_restarted], timeout=15_000):
        job_id = client.start_chat(MESSAGES, model="m")
    assert [(f.job_id, f.reason, f.error_code) for f in finished] == [
        (job_id, "error", p.ErrorCode.ENGINE_DIED)
    ]
    assert client.open_jobs() == set()
    assert client.is_ready() and client.engine_pid() not in (None, first_pid)
    with qtbot.waitSignal(client.job_finished, timeout=15_000) as again:
        client.start_chat(MESSAGES, model="m")
    assert again.args[0].reason == "done"


def test_garbage_lines_are_dropped_and_the_job_still_completes(qtbot, make_client) -> None:
    client = make_client("--garbage")
    rejected: list[str] = []
    client.line_rejected.connect(rejected.append)
    client.start()
    qtbot.waitUntil(client.is_ready, timeout=15_000)
    with qtbot.waitSignal(client.job_finished, timeout=15_000) as finished:
        client.start_chat(MESSAGES, model="m")
    assert finished.args[0].reason == "done"
    assert len(rejected) >= 8  # four before Welcome, four after, four mid-stream
    assert any("not json" in line for line in rejected)


def test_cancel_is_sent_and_idempotent(qtbot, make_client, command_log: Path) -> None:
    client = make_client("--delay", "0.05")
    client.start()
    qtbot.waitUntil(client.is_ready, timeout=15_000)
    deltas: list[str] = []
    client.delta_received.connect(lambda job_id, text: deltas.append(text))
    job_id = client.start_chat(MESSAGES, model="m")
    qtbot.waitUntil(lambda: len(deltas) > 0, timeout=15_000)
    with qtbot.waitSignal(client.job_finished, timeout=15_000) as finished:
        client.cancel(job_id)
        client.cancel(job_id)
    assert finished.args[0].reason == "cancelled"
    client.cancel(job_id)  # after the end: nothing happens
    cancels = [c for c in sent_commands(command_log) if isinstance(c, p.Cancel)]
    assert cancels and all(c.job_id == job_id for c in cancels)


def test_an_engine_that_ignores_cancel_is_killed_and_restarted(qtbot, make_client) -> None:
    client = make_client("--hang-on-chat", cancel_grace_ms=300)
    client.start()
    qtbot.waitUntil(client.is_ready, timeout=15_000)
    finished: list[p.Finished] = []
    client.job_finished.connect(finished.append)
    job_id = client.start_chat(MESSAGES, model="m")
    qtbot.wait(100)
    with qtbot.waitSignal(client.engine_died, timeout=15_000) as died:
        client.cancel(job_id)
    assert died.args[0].reason == "unresponsive"
    assert [(f.job_id, f.error_code) for f in finished] == [(job_id, p.ErrorCode.ENGINE_DIED)]
    assert client.phase == EnginePhase.RESTARTING
    qtbot.waitUntil(client.is_ready, timeout=15_000)


def test_stop_shuts_the_engine_down_without_a_restart(qtbot, make_client) -> None:
    client = make_client()
    client.start()
    qtbot.waitUntil(client.is_ready, timeout=15_000)
    died: list[EngineExit] = []
    client.engine_died.connect(died.append)
    client.stop()
    qtbot.wait(200)
    assert client.phase == EnginePhase.STOPPED
    assert client.engine_pid() is None
    assert died == []
