"""A local server that speaks the Hugging Face Hub's file endpoints, for download tests.

It serves what ``huggingface_hub`` asks for when downloading: repo info
(``/api/models/{repo}[/revision/{rev}]``, with file sizes for ``?blobs=true``) and files
(``HEAD``/``GET /{repo}/resolve/{rev}/{file}``) with ``X-Repo-Commit``, ``ETag`` and
``Content-Length`` headers and ``Range`` requests. Per repo it can slow a file down, cut a
file's first transfer off half-way, require a token (a gated repo) or report a fake size. Given
the tokens it knows, it answers any other token as the real Hub answers a wrong or revoked one.
Every request is recorded so tests can count what was fetched.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

PIECE = 64 * 1024


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "a" * 40
    token: str | None = None  # set: a gated repo that needs "Authorization: Bearer <token>"
    reported_sizes: dict[str, int] = field(default_factory=dict)  # lie about a file's size
    bytes_per_second: dict[str, float] = field(default_factory=dict)  # throttle a file
    cut_first_transfer: set[str] = field(default_factory=set)  # drop half-way, once

    @classmethod
    def from_folder(cls, folder: Path, **kwargs: object) -> Repo:
        files = {
            str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        }
        return cls(files=files, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


class HubServer:
    """``with HubServer({"org/name": Repo(...)}) as hub: ... hub.endpoint ...``"""

    def __init__(self, repos: dict[str, Repo], tokens: set[str] | None = None) -> None:
        self.repos = repos
        # None: any token is accepted where none is needed; a set: others are "invalid".
        self.tokens = tokens
        self.requests: list[Request] = []
        self.bytes_sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def count_sent(self, name: str, size: int) -> None:
        with self._lock:
            self.bytes_sent[name] = self.bytes_sent.get(name, 0) + size

    def gets(self, filename: str) -> list[Request]:
        """GET requests for one file's content (any repo, any revision)."""
        return [
            r for r in self.requests if r.method == "GET" and r.path.endswith(f"/{filename}")
            and "/resolve/" in r.path
        ]  # fmt: skip

    def resolve_gets(self) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path]


_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: tests read hub.requests instead

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _serve(self, body: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.record(
                Request(
                    self.command,
                    path,
                    self.headers.get("Range"),
                    self.headers.get("Authorization"),
                )
            )
            authorization = self.headers.get("Authorization")
            known = {f"Bearer {token}" for token in hub.tokens or ()}
            if hub.tokens is not None and authorization and authorization not in known:
                # The real Hub's answer to a wrong, expired or revoked token, on every endpoint.
                self._error(401, "", "Invalid credentials in Authorization header", body)
            elif match := _INFO.match(path):
                self._info(match["repo"], body)
            elif match := _RESOLVE.match(path):
                self._file(match["repo"], match["rev"], match["file"], body)
            else:
                self._error(404, "RepoNotFound", "Not found", body)

        def _repo(self, repo_id: str, body: bool) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found", body)
                return None
            if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
                self._error(401, "GatedRepo", f"Access to {repo_id} is restricted", body)
                return None
            return repo

        def _info(self, repo_id: str, body: bool) -> None:
            repo = self._repo(repo_id, body)
            if repo is None:
                return
            siblings = [
                {
                    "rfilename": name,
                    "size": repo.reported_sizes.get(name, len(data)),
                    "blobId": hashlib.sha1(data).hexdigest(),
                }
                for name, data in repo.files.items()
            ]
            payload = {
                "id": repo_id,
                "sha": repo.commit,
                "private": False,
                "gated": "manual" if repo.token else False,
                "siblings": siblings,
            }
            self._json(payload, body)

        def _file(self, repo_id: str, revision: str, name: str, body: bool) -> None:
            repo = self._repo(repo_id, body)
            if repo is None:
                return
            if revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", f"Revision {revision} not found", body)
                return
            data = repo.files.get(name)
            if data is None:
                self._error(404, "EntryNotFound", f"{name} not found", body)
                return
            start = 0
            status = 200
            requested = self.headers.get("Range")
            if requested and (match := re.match(r"bytes=(\d+)-$", requested)):
                start = int(match.group(1))
                status = 206
            part = data[start:]
            self.send_response(status)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(part)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if body:
                self._send_body(repo, name, part)

        def _send_body(self, repo: Repo, name: str, part: bytes) -> None:
            cut = name in repo.cut_first_transfer
            if cut:
                repo.cut_first_transfer.discard(name)
            rate = repo.bytes_per_second.get(name)
            limit = len(part) // 2 if cut else len(part)
            sent = 0
            try:
                while sent < limit:
                    piece = part[sent : min(sent + PIECE, limit)]
                    self.wfile.write(piece)
                    self.wfile.flush()
                    sent += len(piece)
                    hub.count_sent(name, len(piece))
                    if rate:
                        time.sleep(len(piece) / rate)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client stopped reading (cancelled)
            if cut:
                self.close_connection = True  # fewer bytes than Content-Length: a dropped link

        def _json(self, payload: object, body: bool) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str, body: bool) -> None:
            data = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler
