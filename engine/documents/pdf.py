"""PDF pages as images and text: pypdfium2 in one renderer process kept by the engine.

PDFium is not thread-safe, and a malformed file can crash it or make it hang; rendering therefore
happens in a child process (``python -m engine.documents.render_worker``), one call at a time,
over length-prefixed msgpack frames on its stdin/stdout. A crash or a hang fails the one document
that caused it, and a fresh process takes the old one's place at the next call.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from engine.documents.render_worker import read_frame, write_frame
from engine.errors import BadInput

log = logging.getLogger(__name__)

RENDER_TIMEOUT_S = 120.0
MAX_DPI = 400.0  # a postage-stamp page is not enlarged beyond this
MAX_FILE_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class PdfInfo:
    page_count: int
    sizes_pt: list[tuple[float, float]]


@dataclass
class RenderedPage:
    """One page as RGB pixels plus its text layer (empty for a scanned page)."""

    index: int  # 0-based
    width: int
    height: int
    pixels: bytes
    dpi: float
    text: str
    page_size_pt: tuple[float, float]

    def to_image(self) -> Any:
        from PIL import Image

        return Image.frombytes("RGB", (self.width, self.height), self.pixels)


class PdfRenderer:
    """The renderer process: started on first use, replaced after a crash or a hang."""

    def __init__(
        self, command: list[str] | None = None, timeout_s: float = RENDER_TIMEOUT_S
    ) -> None:
        self._command = command or [sys.executable, "-m", "engine.documents.render_worker"]
        self._timeout_s = timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[bytes | None] = queue.Queue()
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        # The child imports this very package, wherever it was imported from.
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._replies = queue.Queue()
        threading.Thread(
            target=self._read, args=(process, self._replies), name="pdf-replies", daemon=True
        ).start()
        self._process = process
        return process

    @staticmethod
    def _read(process: subprocess.Popen[bytes], replies: queue.Queue[bytes | None]) -> None:
        assert process.stdout is not None
        while (frame := read_frame(process.stdout)) is not None:
            replies.put(frame)
        replies.put(None)  # the process ended

    def call(self, name: str, *args: Any, file: Path) -> dict[str, Any]:
        with self._lock:  # one document operation at a time: pdfium is single-threaded anyway
            process = self._start()
            assert process.stdin is not None
            try:
                write_frame(process.stdin, msgspec.msgpack.encode({"op": name, "args": list(args)}))
                frame = self._replies.get(timeout=self._timeout_s)
            except queue.Empty as exc:
                self._stop()
                raise BadInput(
                    f"Reading {file.name} took longer than {self._timeout_s:.0f} s and was stopped."
                ) from exc
            except OSError:
                frame = None
            if frame is None:
                self._stop()
                raise BadInput(
                    f"{file.name} made the PDF renderer crash; the file is probably damaged."
                )
            reply: dict[str, Any] = msgspec.msgpack.decode(frame)
            return reply

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()  # end of input: the renderer returns
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()


_renderer = PdfRenderer()
atexit.register(_renderer.close)


def renderer() -> PdfRenderer:
    return _renderer


def is_pdf(head: bytes) -> bool:
    """PDF readers accept the header anywhere in the first kilobyte."""
    return b"%PDF-" in head[:1024]


def _check_file(file: Path) -> None:
    if not file.is_file():
        raise BadInput(f"File not found: {file}")
    size = file.stat().st_size
    if size == 0:
        raise BadInput(f"{file.name} is empty (0 bytes).")
    if size > MAX_FILE_BYTES:
        raise BadInput(f"{file.name} is larger than 1 GiB; split it first.")
    with file.open("rb") as handle:
        head = handle.read(1024)
    if not is_pdf(head):
        kind = "plain text" if _looks_like_text(head) else "some other kind of file"
        raise BadInput(f"{file.name} is named like a PDF but is not one (it looks like {kind}).")


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _raise_for(result: dict[str, Any], file: Path) -> None:
    kind = result.get("error")
    if kind is None:
        return
    if kind in ("password", "security"):
        raise BadInput(
            f"{file.name} is password-protected (encrypted); remove the password and try again."
        )
    if kind == "file":
        raise BadInput(f"{file.name} could not be read from disk.")
    if kind == "page":
        raise BadInput(f"{file.name} has a damaged page: {result.get('detail', '')}".rstrip(": "))
    detail = str(result.get("detail", ""))
    match = re.search(r"PDFium: ([^)]+)", detail)
    reason = (match.group(1) if match else detail or "unknown error").lower()
    raise BadInput(f"{file.name} is damaged or truncated: PDFium cannot read it ({reason}).")


def pdf_info(path: str | Path) -> PdfInfo:
    """Page count and sizes, or ``BadInput`` saying what is wrong with the file."""
    file = Path(path)
    _check_file(file)
    result = _renderer.call("describe", str(file), file=file)
    _raise_for(result, file)
    count = int(result["page_count"])
    if count == 0:
        raise BadInput(f"{file.name} has no pages (it may be truncated).")
    return PdfInfo(count, [(float(w), float(h)) for w, h in result["sizes"]])


def render_page(path: str | Path, index: int, long_side: int = 1536) -> RenderedPage:
    """Page ``index`` (0-based) at the DPI that makes its long side ``long_side`` pixels."""
    file = Path(path)
    result = _renderer.call("render", str(file), index, long_side, MAX_DPI, file=file)
    _raise_for(result, file)
    return RenderedPage(
        index=index,
        width=int(result["width"]),
        height=int(result["height"]),
        pixels=result["pixels"],
        dpi=float(result["dpi"]),
        text=str(result["text"]),
        page_size_pt=(float(result["page_size_pt"][0]), float(result["page_size_pt"][1])),
    )
