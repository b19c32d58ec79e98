"""Bad files in an indexed folder are skipped with a reason, shown in the status; the run finishes."""

from __future__ import annotations

import io
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import protocol as p
from engine.protocol import search as ps
from engine.search.samples import make_image
from tests.engine.harness import EngineHarness, job_id

pytestmark = pytest.mark.slow


def unprivileged_prefix() -> list[str]:
    """As root, file modes bind nobody; drop the capabilities that bypass them for the engine."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a chmod 000 file stays readable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


class UnprivilegedEngine(EngineHarness):
    """The engine, started so that unreadable files really are unreadable to it."""

    def __init__(self) -> None:  # same as EngineHarness, with a command prefix
        self.proc = subprocess.Popen(
            [*unprivileged_prefix(), sys.executable, "-m", "engine"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._events: queue.Queue[p.Event | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(p.Hello(protocol_version=p.PROTOCOL_VERSION, client="test"))
        self.welcome = self.next_event(timeout=120)
        assert isinstance(self.welcome, p.Welcome)


@pytest.fixture(scope="module")
def engine(tiny_cache: Path) -> Iterator[EngineHarness]:
    harness = UnprivilegedEngine()
    yield harness
    harness.close()


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    make_image("chart", (width, height), 1).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A small PNG whose header claims 40 000 × 40 000 pixels (1.6 gigapixels)."""
    data = bytearray(png_bytes(32, 32))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", 40_000, 40_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    make_image("photo", (400, 300), 2).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def bad_folder(tmp_path: Path) -> Iterator[dict[str, Path]]:
    folder = tmp_path / "mixed"
    (folder / "nested").mkdir(parents=True)
    files = {
        "good": folder / "good.png",
        "good_nested": folder / "nested" / "also-good.jpg",
        "empty": folder / "empty.jpg",
        "truncated": folder / "truncated.jpg",
        "bomb": folder / "bomb.png",
        "locked": folder / "locked.png",
        "text": folder / "notes.jpg",
        "pdf": folder / "broken.pdf",
        "self_link": folder / "me.jpg",
        "loop": folder / "nested" / "loop",
        "locked_dir": folder / "private",
    }
    files["good"].write_bytes(png_bytes(80, 60))
    files["good_nested"].write_bytes(jpeg_bytes())
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(jpeg_bytes()[:2000])
    files["bomb"].write_bytes(bomb_png())
    files["locked"].write_bytes(png_bytes(50, 50))
    files["text"].write_text("this is a shopping list, not a photo\n")
    files["pdf"].write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage garbage")
    files["self_link"].symlink_to(files["self_link"])
    files["loop"].symlink_to(folder, target_is_directory=True)
    files["locked_dir"].mkdir()
    (files["locked_dir"] / "secret.png").write_bytes(png_bytes(40, 40))
    files["locked"].chmod(0)
    files["locked_dir"].chmod(0)
    yield files
    files["locked"].chmod(0o644)
    files["locked_dir"].chmod(0o755)


def index(engine: EngineHarness, data: Path, folder: Path, model: Path) -> dict[str, Any]:
    finished, _ = engine.run(
        ps.IndexFolders(
            job_id=job_id(), data_dir=str(data), model=str(model), folders=[str(folder)], workers=1
        )
    )
    assert finished.reason == "done", finished.message
    assert finished.result is not None
    return finished.result


def skipped(engine: EngineHarness, data: Path) -> dict[str, str]:
    finished, _ = engine.run(ps.SearchStatus(job_id=job_id(), data_dir=str(data)))
    status = ps.decode_status(finished.result)
    assert status.skipped_total == len(status.skipped)
    return {entry.path: entry.reason for entry in status.skipped}


def test_bad_files_are_skipped_with_reasons_and_the_run_finishes(
    engine: EngineHarness, tiny_model: Any, tmp_path: Path, bad_folder: dict[str, Path]
) -> None:
    data, folder, model = tmp_path / "data", bad_folder["good"].parent, tiny_model("clip")
    result = index(engine, data, folder, model)
    assert result["embedded"] == 2  # good.png and nested/also-good.jpg
    reasons = skipped(engine, data)
    expected = {
        "empty": "empty (0 bytes)",
        "truncated": "damaged or truncated",
        "bomb": "decompression bomb",
        "locked": "No permission to read this file",
        "text": "not an image format",
        "pdf": "damaged or not a PDF",
        "self_link": "symbolic link loop",
        "loop": "symbolic link loop",
        "locked_dir": "No permission to read this folder",
    }
    assert set(reasons) == {str(bad_folder[name]) for name in expected}
    for name, words in expected.items():
        assert words in reasons[str(bad_folder[name])], (name, reasons[str(bad_folder[name])])
    assert result["skipped"] == len(expected)

    # Nothing changed: nothing is decoded again, and every reason is still shown.
    again = index(engine, data, folder, model)
    assert (again["embedded"], again["tasks"], again["skipped"]) == (0, 0, len(expected))
    assert skipped(engine, data) == reasons

    # The locked file becomes readable (chmod moves its ctime): it is retried and indexed.
    bad_folder["locked"].chmod(0o644)
    fixed = index(engine, data, folder, model)
    assert (fixed["embedded"], fixed["tasks"]) == (1, 1)
    assert str(bad_folder["locked"]) not in skipped(engine, data)
