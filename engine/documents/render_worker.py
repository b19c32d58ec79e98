"""PDF work done in the renderer process: pdfium is not thread-safe, and a crash there stays there.

Functions here run in a child process (see ``engine.documents.pdf``) and return plain dicts, so
nothing but bytes and numbers crosses the process boundary. They never raise for a bad document:
they return ``{"error": kind, "detail": text}`` and the engine words the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# PDFium's error codes (FPDF_ERR_*), as kinds the engine turns into sentences.
_ERROR_KINDS = {1: "unknown", 2: "file", 3: "format", 4: "password", 5: "security", 6: "page"}


def _error(exc: Exception) -> dict[str, Any]:
    code = getattr(exc, "err_code", None)
    return {"error": _ERROR_KINDS.get(code, "unknown") if code else "unknown", "detail": str(exc)}


def describe(path: str) -> dict[str, Any]:
    """Page count and the size of each page in points (1/72 inch)."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        return _error(exc)
    try:
        count = len(document)
        sizes = [list(document.get_page_size(index)) for index in range(count)]
        return {"page_count": count, "sizes": sizes}
    except pdfium.PdfiumError as exc:
        return _error(exc)
    finally:
        document.close()


def render(path: str, index: int, long_side: int, max_dpi: float) -> dict[str, Any]:
    """Page ``index`` (0-based) rendered so that its long side is ``long_side`` pixels (RGB bytes),
    with the text of its text layer."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        return _error(exc)
    try:
        page = document[index]
        width_pt, height_pt = page.get_size()
        if width_pt <= 0 or height_pt <= 0:
            return {"error": "page", "detail": f"page {index + 1} has no size"}
        # Scale 1.0 is 72 DPI. The long side decides, capped so a tiny page is not blown up.
        scale = min(long_side / max(width_pt, height_pt), max_dpi / 72.0)
        bitmap = page.render(scale=scale, rotation=0, may_draw_forms=True)
        image = bitmap.to_pil().convert("RGB")
        textpage = page.get_textpage()
        text = textpage.get_text_bounded()
        return {
            "width": image.width,
            "height": image.height,
            "pixels": image.tobytes(),
            "dpi": round(72.0 * scale, 2),
            "text": text.replace("\r\n", "\n"),
            "page_size_pt": [width_pt, height_pt],
        }
    except pdfium.PdfiumError as exc:
        return _error(exc)
    finally:
        document.close()


# ---------------------------------------------------------------------------------------------
# The process: length-prefixed msgpack requests on stdin, replies on stdout
# ---------------------------------------------------------------------------------------------

_OPERATIONS: dict[str, Callable[..., dict[str, Any]]] = {"describe": describe, "render": render}


def read_frame(stream: Any) -> bytes | None:
    """One frame: a 4-byte big-endian length, then that many bytes (None at end of stream)."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    data: bytes = stream.read(size)
    return data if len(data) == size else None


def write_frame(stream: Any, data: bytes) -> None:
    stream.write(len(data).to_bytes(4, "big") + data)
    stream.flush()


def main() -> None:
    import sys

    import msgspec

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print from a library must not corrupt the replies
    while True:
        frame = read_frame(stdin)
        if frame is None:
            return
        request = msgspec.msgpack.decode(frame)
        operation = _OPERATIONS.get(request.get("op"))
        try:
            reply = (
                operation(*request.get("args", []))
                if operation
                else {"error": "unknown", "detail": f"no operation {request.get('op')!r}"}
            )
        except Exception as exc:  # a bug here must not kill the renderer for the next file
            reply = {"error": "unknown", "detail": f"{type(exc).__name__}: {exc}"}
        write_frame(stdout, msgspec.msgpack.encode(reply))


if __name__ == "__main__":
    main()
