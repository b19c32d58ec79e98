"""A scripted stand-in for ``python -m engine`` that speaks the protocol, for fault injection.

Run as ``python tests/desktop/fake_engine.py [options]``. It answers Hello with Welcome, streams
a canned reply to every Chat word by word, honours Cancel, and on request misbehaves: crashes
mid-answer (once, remembered through a marker file, so the restarted engine behaves), hangs,
writes garbage, or claims another protocol version. Every command it reads is appended to
``--log`` so tests can check what the window sent.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine import protocol as p
from engine.protocol import finetune as pf

DEFAULT_REPLY = (
    "Here is what I see: a **red square** on a white background.\n\n"
    "```python\nprint('hello')\n```\n\nAnything else?"
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reply", default=DEFAULT_REPLY)
    parser.add_argument("--delay", type=float, default=0.005, help="seconds between deltas")
    parser.add_argument("--log", type=Path, help="append every command line read here")
    parser.add_argument(
        "--crash-on-chat",
        type=Path,
        metavar="MARKER",
        help="crash (SIGKILL) mid-answer if MARKER does not exist, creating it",
    )
    parser.add_argument("--hang-handshake", action="store_true", help="never send Welcome")
    parser.add_argument("--hang-on-chat", action="store_true", help="never answer, ignore Cancel")
    parser.add_argument("--garbage", action="store_true", help="interleave non-protocol lines")
    parser.add_argument("--error-on-chat", metavar="CODE:SENTENCE")
    parser.add_argument(
        "--unless-cloud-only",
        action="store_true",
        help="…but answer a chat whose policy is cloud_only",
    )
    parser.add_argument("--protocol-version", type=int, default=p.PROTOCOL_VERSION)
    parser.add_argument("--backend", default="fake", help="the backend named in results")
    parser.add_argument("--gpu-name", default="Fake GPU")
    return parser.parse_args(argv)


class FakeEngine:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.cancelled: dict[str, threading.Event] = {}
        self.loaded: p.ModelInfo | None = None
        self.gpu = p.DeviceInfo(
            kind="cuda", name=args.gpu_name, index=0, total_memory=24 << 30, free_memory=24 << 30
        )

    def send(self, event: p.Event) -> None:
        self.send_raw(p.encode(event))

    def send_raw(self, data: bytes) -> None:
        with self.lock:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def garbage(self) -> None:
        if self.args.garbage:
            self.send_raw(b"this is not json\n")
            self.send_raw(b'{"type": "no_such_event", "x": 1}\n')
            self.send_raw(b"\xff\xfe\x00 binary \x80\n")
            self.send_raw(b'{"type": "delta"}\n')  # a known tag, missing fields

    def status(self, state: str, running: list[str]) -> None:
        self.send(
            p.EngineStatus(
                state=state, loaded=self.loaded, devices=[self.gpu], running_jobs=running
            )
        )  # type: ignore[arg-type]

    def serve(self) -> None:
        self.garbage()
        for raw in sys.stdin.buffer:
            if self.args.log:
                with open(self.args.log, "ab") as f:
                    f.write(raw)
            try:
                command = p.decode_command(raw)
            except p.DecodeError as error:
                self.send(p.ProtocolError(code=p.ErrorCode.MALFORMED, message=str(error)))
                continue
            if self.handle(command) is False:
                return

    def handle(self, command: p.Command) -> bool:
        if isinstance(command, p.Hello):
            if self.args.hang_handshake:
                return True
            if command.protocol_version != self.args.protocol_version:
                self.send(
                    p.ProtocolError(
                        code=p.ErrorCode.VERSION_MISMATCH,
                        message=f"engine speaks {self.args.protocol_version}",
                    )
                )
                return True
            self.send(
                p.Welcome(
                    protocol_version=self.args.protocol_version,
                    engine_version="fake",
                    pid=os.getpid(),
                    devices=[self.gpu],
                )
            )
            self.garbage()
        elif isinstance(command, p.GetStatus):
            self.status("idle", [])
        elif isinstance(command, p.Cancel):
            if not self.args.hang_on_chat and command.job_id in self.cancelled:
                self.cancelled[command.job_id].set()
        elif isinstance(command, p.Chat):
            self.cancelled[command.job_id] = threading.Event()
            threading.Thread(target=self.chat, args=(command,), daemon=True).start()
        elif isinstance(command, pf.ListFinetuneRuns):  # the Fine-tune page asks at start-up
            self.send(p.Finished(job_id=command.job_id, reason="done", result={"runs": []}))
        elif isinstance(command, p.Shutdown):
            return False
        return True

    def chat(self, chat: p.Chat) -> None:
        self.send(p.JobStarted(job_id=chat.job_id, kind="chat"))
        if self.args.hang_on_chat:
            return
        model = chat.model or "none"
        if self.loaded is None or self.loaded.model != model:
            self.status("loading", [chat.job_id])
            self.loaded = p.ModelInfo(
                model=model,
                path=model,
                family="fake",
                quant="nf4",
                device="cuda:0",
                dtype="bfloat16",
                memory_bytes=5 << 29,
                decoding="cuda-graphs",  # what the real engine reports on an NVIDIA GPU
            )
            self.gpu.free_memory = (24 << 30) - (5 << 29) - (1 << 29)
        self.status("busy", [chat.job_id])
        if self.args.error_on_chat and not (
            self.args.unless_cloud_only and chat.policy == "cloud_only"
        ):
            code, _, sentence = self.args.error_on_chat.partition(":")
            self.finish(
                p.Finished(job_id=chat.job_id, reason="error", error_code=code, message=sentence)
            )
            return
        crash = self.args.crash_on_chat is not None and not self.args.crash_on_chat.exists()
        words = self.args.reply.split(" ")
        for index, word in enumerate(words):
            if self.cancelled[chat.job_id].is_set():
                self.finish(p.Finished(job_id=chat.job_id, reason="cancelled"))
                return
            if crash and index == 2:
                self.args.crash_on_chat.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            self.send(p.Delta(job_id=chat.job_id, text=word if index == 0 else " " + word))
            if index == 1:
                self.garbage()
            time.sleep(self.args.delay)
        result = {
            "text": self.args.reply,
            "backend": self.args.backend,
            "model": model,
            "quant": "nf4",
            "device": "cuda:0",
            "completion_tokens": len(words),
            "tokens_per_s": 42.0,
            "time_to_first_token_s": 0.085,
            # A follow-up reuses the conversation's cache, as the real engine does.
            "prompt_tokens": 600 + 40 * len(chat.messages),
            "cached_tokens": 600 + 40 * (len(chat.messages) - 1) if len(chat.messages) > 1 else 0,
            "images": sum(len(m.images) for m in chat.messages),
        }
        self.finish(p.Finished(job_id=chat.job_id, reason="done", result=result))

    def finish(self, finished: p.Finished) -> None:
        self.send(finished)
        self.status("idle", [])


if __name__ == "__main__":
    FakeEngine(parse_args(sys.argv[1:])).serve()
