"""``visiondesk chat|extract --backend …`` against local servers speaking each provider's format:
the same output and exit codes as with local models, plus who answered and why."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from engine.protocol import cloud as c
from tests.engine.wire.stack import KEYS, REMOTE_MODEL, ROOT, CloudStack

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[CloudStack]:
    servers = CloudStack(tmp_path_factory.mktemp("cloud"))
    yield servers
    servers.close()


@pytest.fixture(autouse=True)
def fresh(stack):
    stack.reset()


@pytest.fixture
def cli(stack, tmp_path) -> Run:
    """``visiondesk`` with its own data folder, the local servers and the test keyring."""
    env = stack.env(VISIONDESK_DATA_DIR=str(tmp_path / "data"), VISIONDESK_LOG_LEVEL="WARNING")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "desktop.main", *args],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=180,
        )  # fmt: skip

    return run


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pictures") / "red.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return str(path)


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
def test_chat_with_a_cloud_backend_prints_the_answer_and_says_who_answered(
    cli, picture, provider
) -> None:
    result = cli("chat", "--backend", provider, "--image", picture, "What is this?")
    assert result.returncode == 0, result.stderr
    assert "received 1 image(s): 64x48. You asked: What is this?" in result.stdout
    label = c.PROVIDER_LABELS[provider]
    assert (
        f"visiondesk: {label} {c.DEFAULT_MODELS[provider]} — chosen for this request"
        in result.stderr
    )


def test_chat_with_a_remote_server_url_uses_the_model_it_serves(cli, stack, picture) -> None:
    result = cli("chat", "--backend", f"remote:{stack.remote.origin}", "--image", picture, "Hi?")
    assert result.returncode == 0, result.stderr
    assert "received 1 image(s)" in result.stdout and REMOTE_MODEL in result.stderr
    assert stack.remote.requests[-1].body["model"] == REMOTE_MODEL


def test_json_mode_records_backend_model_reason_and_tokens(cli, stack, picture) -> None:
    result = cli("chat", "--backend", "gemini", "--backend-model", "gemini-2.5-pro", "--json",
                 "--image", picture, "What is this?")  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["type"] for e in events} >= {"job_started", "progress", "delta", "finished"}
    end = events[-1]["result"]
    assert (end["backend"], end["model"], end["why"]) == (
        "gemini",
        "gemini-2.5-pro",
        "chosen for this request",
    )
    assert end["input_tokens"] == 29 and end["output_tokens"] == 11
    assert "gemini-2.5-pro" in stack.gemini.requests[-1].path


def test_a_rejected_key_exits_5_with_one_line_and_no_key(cli, stack, picture) -> None:
    stack.openai.key = "not-this-one"
    result = cli("chat", "--backend", "openai", "--image", picture, "What is this?")
    assert result.returncode == 5
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "rejected the API key" in errors[0]
    assert KEYS["openai"] not in result.stderr + result.stdout


def test_local_then_cloud_falls_back_and_says_why(cli, stack, picture, tmp_path) -> None:
    result = cli("chat", "--model", str(tmp_path / "not-installed"), "--device", "cpu",
                 "--policy", "local_then_cloud", "--backend", "anthropic", "--image", picture, "Hm?")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "— the local model is not installed" in result.stderr
    assert "received 1 image(s)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--policy", "local_only", "--backend", "anthropic"],
        ["--never-send", "--backend", "anthropic"],
    ],
)
def test_the_policy_keeps_it_local_with_exit_5_and_no_request(cli, stack, picture, args) -> None:
    result = cli("chat", *args, "--image", picture, "What is this?")
    assert result.returncode == 5, result.stderr
    assert stack.request_count() == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--backend", "skynet"],
        ["--backend", "remote"],
        ["--backend", "remote:"],
        ["--policy", "everywhere"],
    ],
)
def test_impossible_backend_choices_are_usage_errors(cli, stack, picture, args) -> None:
    result = cli("chat", *args, "--image", picture, "What is this?")
    assert result.returncode == 2
    assert stack.request_count() == 0


@pytest.mark.parametrize("command", ["chat", "extract"])
def test_local_then_ask_cannot_ask_in_a_terminal_so_it_says_how_to_send_and_sends_nothing(
    cli, stack, picture, tmp_path, command
) -> None:
    extra = ["--schema", "key_values"] if command == "extract" else ["What is this?"]
    args = [picture, *extra] if command == "extract" else ["--image", picture, *extra]
    result = cli(command, "--model", str(tmp_path / "not-installed"), "--device", "cpu",
                 "--policy", "local_then_ask", "--backend", "openai", *args)  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    assert "needs your consent. A command cannot ask: --policy local_then_cloud" in result.stderr
    assert stack.request_count() == 0


def test_extract_with_a_cloud_backend_returns_schema_valid_json(cli, stack, picture) -> None:
    answer = {"colour": "red"}  # key_values: a flat mapping from each label to its value
    stack.anthropic.json_answers.extend([answer] * 4)
    result = cli(
        "extract", "--backend", "anthropic", "--schema", "key_values", "--one-pass", picture
    )
    assert result.returncode == 0, result.stderr
    assert stack.anthropic.requests and stack.anthropic.requests[-1].body.get("tools")
    assert Path(picture).name in result.stdout or "colour" in result.stdout


@pytest.mark.parametrize("backend", ["openai", "remote:http://127.0.0.1:9/v1"])
def test_extract_stops_at_the_first_file_with_exit_5_when_the_backend_cannot_be_used(
    cli, stack, picture, tmp_path, backend
) -> None:
    # No OpenAI key anywhere; the remote server's port has nothing listening.
    stack.write_keys({name: key for name, key in KEYS.items() if name != "openai"})
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.open(picture).save(folder / name)
    result = cli("extract", str(folder), "--backend", backend, "--schema", "key_values",
                 "--one-pass")  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert result.stderr.count(": failed:") == 1  # every other file would fail the same way
    assert "Stopped early:" in result.stderr
