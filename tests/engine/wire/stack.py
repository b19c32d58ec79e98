"""Everything a cloud test needs at once: the provider servers, a file keyring with their keys,
the environment that points an engine (or the CLI) at them, and an engine whose log is kept."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from engine import protocol as p
from tests.engine.harness import EngineHarness
from tests.engine.wire.anthropic_server import AnthropicServer
from tests.engine.wire.gemini_server import GeminiServer
from tests.engine.wire.keyring_file import ENV as KEYRING_ENV
from tests.engine.wire.openai_server import OpenAIServer
from tests.engine.wire.server import WireServer

ROOT = Path(__file__).resolve().parents[3]

# Distinctive, so that a grep for them cannot match anything by chance.
KEYS = {
    "anthropic": "sk-ant-test-KEY-7f3a9c1e5b2d",
    "openai": "sk-test-KEY-openai-4e8b2a6c0d9f",
    "gemini": "AIza-test-KEY-gemini-1c5e9a3b7d",
    "remote": "tok-test-KEY-remote-8d2f6b0a4c",
}
REMOTE_MODEL = "Qwen/Qwen2-VL-7B-Instruct"
# Variables a developer's shell may hold: tests must neither use nor leak them.
REAL_CREDENTIALS = (
    "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "GEMINI_API_KEY",
    "GOOGLE_API_KEY", "VISIONDESK_REMOTE_TOKEN", "ANTHROPIC_PROFILE",
)  # fmt: skip


class CloudStack:
    """Four local servers (Anthropic, OpenAI, Gemini, a vLLM-like remote) and their keys."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.anthropic = AnthropicServer(KEYS["anthropic"])
        self.openai = OpenAIServer(KEYS["openai"])
        self.gemini = GeminiServer(KEYS["gemini"])
        self.remote = OpenAIServer(KEYS["remote"], models=(REMOTE_MODEL,))
        self.keyring_path = folder / "keyring.json"
        self.write_keys()

    @property
    def servers(self) -> dict[str, WireServer]:
        return {
            "anthropic": self.anthropic,
            "openai": self.openai,
            "gemini": self.gemini,
            "remote": self.remote,
        }

    @property
    def remote_url(self) -> str:
        return f"{self.remote.origin}/v1"

    def write_keys(self, keys: dict[str, str] | None = None) -> None:
        entries = {f"VisionDesk/{name}": key for name, key in (keys or KEYS).items()}
        self.keyring_path.write_text(json.dumps(entries), encoding="utf-8")

    def request_count(self) -> int:
        return sum(len(server.requests) for server in self.servers.values())

    def reset(self) -> None:
        for name, server in self.servers.items():
            server.reset(KEYS[name])
        self.write_keys()

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for an engine or CLI subprocess using these servers and keys."""
        env = {k: v for k, v in os.environ.items() if k not in REAL_CREDENTIALS}
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            PYTHON_KEYRING_BACKEND="tests.engine.wire.keyring_file.JsonFileKeyring",
            ANTHROPIC_BASE_URL=self.anthropic.origin,
            OPENAI_BASE_URL=f"{self.openai.origin}/v1",
            GOOGLE_GEMINI_BASE_URL=self.gemini.origin,
            VISIONDESK_CLOUD_TIMEOUT_S="2",
            VISIONDESK_CLOUD_MAX_RETRIES="2",
            VISIONDESK_CLOUD_BACKOFF_S="0.05",
            VISIONDESK_LOG_LEVEL="DEBUG",  # the most a log could ever say; keys must not be in it
        )
        env[KEYRING_ENV] = str(self.keyring_path)
        env.update(extra)
        return env

    def close(self) -> None:
        for server in self.servers.values():
            server.close()


class LoggedEngine(EngineHarness):
    """``EngineHarness`` with a chosen environment and its stderr kept in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=ROOT,
        )
        self._events: queue.Queue[p.Event | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(p.Hello(protocol_version=p.PROTOCOL_VERSION, client="test"))
        self.welcome = self.next_event(timeout=120)
        assert isinstance(self.welcome, p.Welcome)

    def run_all(self, command: p.Command, timeout: float = 120) -> list[p.Event]:
        """Every event of one job, ``Finished`` last."""
        self.send(command)
        return list(self.job_events(command.job_id, timeout))  # type: ignore[attr-defined]

    def environ(self) -> bytes:
        """The engine process's environment, as the kernel holds it."""
        return Path(f"/proc/{self.proc.pid}/environ").read_bytes()

    def close(self) -> None:
        super().close()
        self._log.close()


def finished(events: list[p.Event]) -> p.Finished:
    last = events[-1]
    assert isinstance(last, p.Finished)
    return last


def deltas(events: list[p.Event]) -> list[str]:
    return [event.text for event in events if isinstance(event, p.Delta)]
