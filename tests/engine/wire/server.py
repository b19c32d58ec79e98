"""The shared part of the wire-format servers: a threaded stdlib HTTP server on 127.0.0.1 that
records every request and answers either from a script of canned replies (errors, stalls,
garbage) or with the provider's normal, streamed answer describing the images it received."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Reply:
    """One canned HTTP answer. ``events`` are written one by one (server-sent events)."""

    status: int = 200
    body: Any = None  # a dict is sent as JSON; str/bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    events: list[bytes] | None = None
    stall_s: float = 0.0  # wait this long before answering at all
    stall_after_events: int | None = None  # …or after this many events (a stalled stream)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: Any
    at: float  # time.monotonic() on arrival


class WireServer:
    """Subclasses speak one provider's format: auth, the normal answer, its error bodies."""

    stall_cap_s = 20.0

    def __init__(self, key: str) -> None:
        self.key = key
        self.pace_s = 0.0  # a pause between streamed events, so that deltas arrive one by one
        self.requests: list[Recorded] = []
        self.script: deque[Reply] = deque()
        self.json_answers: deque[Any] = deque()  # schema-mode answers: dicts or raw strings
        self._released = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self, key: str) -> None:
        self.key = key
        self.pace_s = 0.0
        self.requests.clear()
        self.script.clear()
        self.json_answers.clear()

    def close(self) -> None:
        self._released.set()  # stalled handlers give up at once
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer_json(self) -> Any:
        return self.json_answers.popleft() if self.json_answers else {}

    # --- provider specifics ---------------------------------------------------------------------
    def presented_key(self, request: Recorded) -> str | None:
        raise NotImplementedError

    def auth_error(self) -> Reply:
        raise NotImplementedError

    def route(self, request: Recorded) -> Reply:
        raise NotImplementedError

    # --- serving --------------------------------------------------------------------------------
    def serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        url = urlparse(handler.path)
        request = Recorded(
            method,
            url.path,
            parse_qs(url.query),
            {k.lower(): v for k, v in handler.headers.items()},
            body,
            time.monotonic(),
        )
        self.requests.append(request)
        if self.script:
            reply = self.script.popleft()
        elif self.presented_key(request) != self.key:
            reply = self.auth_error()
        else:
            reply = self.route(request)
        try:
            self._write(handler, reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing left to do

    def _write(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.stall_s:
            self._released.wait(min(reply.stall_s, self.stall_cap_s))
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if reply.events is not None:
            handler.send_header("content-type", "text/event-stream")
            handler.end_headers()
            for index, event in enumerate(reply.events):
                if reply.stall_after_events == index:
                    self._released.wait(self.stall_cap_s)
                handler.wfile.write(event)
                handler.wfile.flush()
                if self.pace_s:
                    time.sleep(self.pace_s)
            return
        if isinstance(reply.body, (dict, list)):
            data = json.dumps(reply.body).encode()
            handler.send_header("content-type", "application/json")
        else:
            data = reply.body.encode() if isinstance(reply.body, str) else (reply.body or b"")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _handler_for(server: WireServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.serve(self, "GET")

        def do_POST(self) -> None:
            server.serve(self, "POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


# --- helpers for the providers --------------------------------------------------------------------


def image_size(data_b64: str) -> str:
    """``WxH`` of a base64 image, decoded for real (proves the bytes arrived intact)."""
    from PIL import Image

    padded = data_b64 + "=" * (-len(data_b64) % 4)  # google-genai sends URL-safe base64
    raw = (
        base64.urlsafe_b64decode(padded)
        if "-" in padded or "_" in padded
        else base64.b64decode(padded)
    )
    with Image.open(io.BytesIO(raw)) as image:
        return f"{image.width}x{image.height}"


def describe(sizes: list[str], question: str) -> str:
    """The server's deterministic answer: what it received."""
    seen = ", ".join(sizes) if sizes else "no images"
    return f"I received {len(sizes)} image(s): {seen}. You asked: {question}"


def pieces(text: str) -> list[str]:
    """Split an answer into several deltas (word by word, spaces kept)."""
    words = text.split(" ")
    return [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words)]


def sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def as_json_text(answer: Any) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer)
