"""Ctrl-C from a terminal (SIGINT to the command's whole process group): the command alone gets
it and stops the job; the engine, in a session of its own, lives on for the next question and
still ends when the command does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.cli.test_extract_batch import engine_children
from tests.engine.wire.server import Reply, sse
from tests.engine.wire.stack import ROOT, CloudStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudStack]:
    servers = CloudStack(tmp_path_factory.mktemp("cloud"))
    yield servers
    servers.close()  # releases the stalled answer


def _chunk(text: str) -> bytes:
    return sse({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5.5",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})  # fmt: skip


def _conversation(stack: CloudStack, tmp_path: Path) -> subprocess.Popen[str]:
    env = stack.env(
        VISIONDESK_DATA_DIR=str(tmp_path / "data"),
        VISIONDESK_LOG_LEVEL="WARNING",
        VISIONDESK_CLOUD_TIMEOUT_S="60",  # the stalled answer stays stalled until Ctrl-C
    )
    return subprocess.Popen(
        [sys.executable, "-m", "desktop.main", "chat", "-i", "--backend", "openai", "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,  # a process group of its own, as a terminal's job has
    )


def test_a_terminal_ctrl_c_stops_one_answer_and_the_conversation_goes_on_to_exit_0(
    stack: CloudStack, tmp_path: Path
) -> None:
    stack.reset()
    # The first answer streams a little, then stalls: it is still running at the Ctrl-C.
    stack.openai.script.append(
        Reply(events=[_chunk("Once"), _chunk(" upon"), _chunk(" a time")], stall_after_events=2)
    )
    process = _conversation(stack, tmp_path)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("Tell me a long story\n")
    process.stdin.flush()
    for line in process.stdout:
        if json.loads(line)["type"] == "delta":
            break
    os.killpg(process.pid, signal.SIGINT)
    process.stdin.write("What colour is it?\n")
    stdout, stderr = process.communicate(timeout=120)  # then end of input: Ctrl-D
    assert "visiondesk: cancelled" in stderr
    assert "error" not in stderr, stderr
    finished = [json.loads(line) for line in stdout.splitlines() if '"finished"' in line]
    assert finished and finished[-1]["reason"] == "done"
    assert "You asked: What colour is it?" in "".join(
        json.loads(line).get("text", "") for line in stdout.splitlines()
    )
    assert process.returncode == 0, stderr  # a stopped answer is no failure of the conversation


def test_the_engine_ends_when_the_command_is_killed(stack: CloudStack, tmp_path: Path) -> None:
    stack.reset()
    process = _conversation(stack, tmp_path)
    deadline = time.monotonic() + 60
    while not (engines := engine_children(process.pid)):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    engine = psutil.Process(engines[0])
    assert os.getsid(engine.pid) != os.getsid(process.pid)  # out of reach of the terminal
    process.kill()  # the command dies at once; the engine's stdin closes
    process.communicate(timeout=30)
    engine.wait(timeout=60)  # raises if it is still running
    assert not psutil.pid_exists(engine.pid) or engine.status() == psutil.STATUS_ZOMBIE
