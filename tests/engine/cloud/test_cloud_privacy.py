"""What leaves the machine: nothing under "local only" or "never send", and never a key in a log,
on stderr, in a SQLite file or in a child process's environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from desktop.storage import Storage
from engine import protocol as p
from engine.protocol import cloud as c
from tests.engine.harness import job_id
from tests.engine.wire.stack import KEYS, ROOT, CloudStack, LoggedEngine, finished


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pictures") / "private.png"
    Image.new("RGB", (64, 48), (120, 10, 200)).save(path)
    return str(path)


def ask(picture: str, **fields) -> p.Chat:
    return p.Chat(
        job_id=job_id(),
        messages=[p.ChatMessage(role="user", text="What is this?", images=[picture])],
        sampling=p.Sampling(max_new_tokens=16),
        **fields,
    )


@pytest.mark.parametrize("fields", [{}, {"policy": "local_only"}, {"backend": "local"}])
def test_with_local_only_a_local_failure_makes_no_http_request_at_all(
    engine, stack, picture, tmp_path, fields
) -> None:
    missing = finished(engine.run_all(ask(picture, model=str(tmp_path / "absent"), **fields)))
    assert missing.error_code == p.ErrorCode.MODEL_NOT_FOUND
    unloaded = finished(engine.run_all(ask(picture, **fields)))  # no model chosen at all
    assert unloaded.error_code == p.ErrorCode.NO_MODEL_LOADED
    assert stack.request_count() == 0


def test_local_only_refuses_a_named_provider_without_contacting_it(engine, stack, picture) -> None:
    end = finished(engine.run_all(ask(picture, backend="anthropic", policy="local_only")))
    assert end.error_code == p.ErrorCode.CLOUD_NOT_ALLOWED
    assert stack.request_count() == 0


@pytest.mark.parametrize("policy", [None, *c.POLICIES])
@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini", "remote"])
def test_never_send_is_never_sent_whatever_the_policy(
    engine, stack, picture, tmp_path, policy, provider
) -> None:
    command = ask(
        picture,
        model=str(tmp_path / "absent"),  # the local model fails: a fallback would be tempting
        device="cpu",
        backend=provider,
        base_url=stack.remote_url if "remote" in (provider, policy) else None,
        policy=policy,
        never_send=True,
    )
    end = finished(engine.run_all(command))
    assert end.reason == "error"
    assert end.error_code in (p.ErrorCode.CLOUD_NOT_ALLOWED, p.ErrorCode.MODEL_NOT_FOUND)
    assert stack.request_count() == 0


def _run_everything(engine: LoggedEngine, stack: CloudStack, picture: str) -> list[p.Finished]:
    """Successes, every key-related failure and the Settings jobs, for every provider."""
    ends = []
    for provider, server in stack.servers.items():
        base_url = stack.remote_url if provider == "remote" else None
        ends.append(finished(engine.run_all(ask(picture, backend=provider, base_url=base_url))))
        for job in (c.TestConnection, c.ListProviderModels):
            ends.append(
                finished(engine.run_all(job(job_id=job_id(), provider=provider, base_url=base_url)))
            )
        server.script.append(server.rate_limit(0.05))  # type: ignore[attr-defined]
        server.script.append(server.garbage())  # type: ignore[attr-defined]
        ends.append(finished(engine.run_all(ask(picture, backend=provider, base_url=base_url))))
        server.key = "some-other-key"  # a 401; OpenAI's body quotes the key's start back
        ends.append(finished(engine.run_all(ask(picture, backend=provider, base_url=base_url))))
        server.key = KEYS[provider]
    return ends


def test_api_keys_never_reach_logs_stderr_sqlite_or_a_child_environment(
    engine, stack, picture, tmp_path
) -> None:
    ends = _run_everything(engine, stack, picture)
    assert {end.error_code for end in ends} >= {None, c.INVALID_KEY, c.MALFORMED_RESPONSE}
    # The desktop stores answers with their provenance and failures with their message.
    data = tmp_path / "data"
    storage = Storage(data / "visiondesk.sqlite3")
    conversation = storage.create_conversation("privacy")
    for end in ends:
        message = storage.add_message(
            conversation.id, "assistant", (end.result or {}).get("text", "")
        )
        message.provenance = end.result or {}
        message.error_code, message.error_message = end.error_code, end.message
        storage.save_message(message)
    # The command line, with the engine's log at its most talkative.
    cli = subprocess.run(
        [sys.executable, "-m", "desktop.main", "chat", "--backend", "openai", "--verbose",
         "--image", picture, "What is this?"],
        capture_output=True, env=stack.env(VISIONDESK_DATA_DIR=str(data)), cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    places: dict[str, bytes] = {
        "engine log (stderr, DEBUG)": engine.log_path.read_bytes(),
        "engine environment": engine.environ(),
        "cli stdout": cli.stdout,
        "cli stderr (engine log, verbose)": cli.stderr,
        "protocol results": repr([p.to_builtins(end) for end in ends]).encode(),
    }
    storage.close()
    for file in Path(data).rglob("*"):
        if file.is_file():  # the SQLite database, its WAL, the logs folder
            places[str(file.relative_to(data))] = file.read_bytes()
    assert any(name.endswith(".sqlite3") for name in places)
    assert b"/v1/chat/completions" in cli.stderr  # the logs really are verbose enough to matter
    for key in KEYS.values():
        leaks = [name for name, content in places.items() if key.encode() in content]
        assert leaks == [], f"a key appears in {leaks}"
