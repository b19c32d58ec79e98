"""The engine process over real pipes: handshake, bad lines, shutdown and stdin EOF."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import protocol as p


def start_engine() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def send(proc: subprocess.Popen[bytes], raw: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(raw if raw.endswith(b"\n") else raw + b"\n")
    proc.stdin.flush()


def read_event(proc: subprocess.Popen[bytes]) -> p.Event:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "engine closed its output"
    return p.decode_event(line)


@pytest.fixture
def engine():
    proc = start_engine()
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_handshake_reports_versions_and_devices(engine) -> None:
    send(engine, p.encode(p.Hello(protocol_version=p.PROTOCOL_VERSION)))
    welcome = read_event(engine)
    assert isinstance(welcome, p.Welcome)
    assert welcome.protocol_version == p.PROTOCOL_VERSION
    assert welcome.engine_version == p.ENGINE_VERSION
    assert welcome.pid == engine.pid
    assert welcome.devices[-1].kind == "cpu" and welcome.devices[-1].total_memory


def test_malformed_and_unknown_lines_get_a_protocol_error_and_the_engine_keeps_serving(
    engine,
) -> None:
    send(engine, p.encode(p.Hello(protocol_version=p.PROTOCOL_VERSION)))
    assert isinstance(read_event(engine), p.Welcome)
    for bad in (b"{not json", b'{"type":"teleport"}', b'{"type":"chat","job_id":1}', b"\xff\xfe"):
        send(engine, bad)
        error = read_event(engine)
        assert isinstance(error, p.ProtocolError) and error.code == "malformed" and error.message
    send(engine, p.encode(p.GetStatus()))
    status = read_event(engine)
    assert isinstance(status, p.EngineStatus) and status.state == "idle"


def test_commands_before_the_handshake_are_refused(engine) -> None:
    send(engine, p.encode(p.GetStatus()))
    error = read_event(engine)
    assert isinstance(error, p.ProtocolError) and "hello" in error.message


def test_a_protocol_version_mismatch_is_a_clear_error_and_exit(engine) -> None:
    send(engine, p.encode(p.Hello(protocol_version=p.PROTOCOL_VERSION + 1)))
    error = read_event(engine)
    assert isinstance(error, p.ProtocolError) and error.code == "version_mismatch"
    assert "protocol" in error.message
    assert engine.wait(timeout=30) == 3


def test_shutdown_exits_cleanly(engine) -> None:
    send(engine, p.encode(p.Hello(protocol_version=p.PROTOCOL_VERSION)))
    read_event(engine)
    send(engine, p.encode(p.Shutdown()))
    assert engine.wait(timeout=30) == 0


def test_stdin_eof_ends_the_engine(engine) -> None:
    send(engine, p.encode(p.Hello(protocol_version=p.PROTOCOL_VERSION)))
    read_event(engine)
    assert engine.stdin is not None
    engine.stdin.close()
    assert engine.wait(timeout=30) == 0


def test_a_stray_print_in_the_engine_goes_to_stderr_not_the_protocol_stream() -> None:
    code = (
        "import engine.server as s, sys, threading;"
        "orig=s.serve\n"
        "def serve(*a):\n print('library noise'); return orig(*a)\n"
        "s.serve=serve; s.main()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(p.encode(p.Hello(protocol_version=p.PROTOCOL_VERSION)), timeout=60)
    assert b"library noise" in err
    for line in out.splitlines():
        p.decode_event(line)  # every stdout line is a protocol event
