"""A file or folder name that is not UTF-8 is skipped by the walk with its reason, in text the
index can store and the protocol can send; the other files are indexed."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from engine.search.walker import Candidate, Skip, walk


def test_names_that_are_not_utf8_are_skipped_with_a_printable_path(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    (tmp_path / "good.png").write_bytes(b"png")
    with open(root + b"/caf\xe9 receipt.png", "wb") as file:
        file.write(b"png")
    os.mkdir(root + b"/d\xe9j\xe0")
    with open(root + b"/d\xe9j\xe0/inside.png", "wb") as file:
        file.write(b"png")
    found = list(walk(str(tmp_path)))
    assert [Path(c.path).name for c in found if isinstance(c, Candidate)] == ["good.png"]
    skips = {Path(s.path).name: s.reason for s in found if isinstance(s, Skip)}
    assert skips == {
        "caf\\xe9 receipt.png": "The file name is not valid UTF-8; rename the file to index it.",
        "d\\xe9j\\xe0": "The folder name is not valid UTF-8; rename the folder to index it.",
    }
    msgspec.json.encode([s.path for s in found])  # nothing the protocol would refuse
