"""Walking indexed folders: which files are images or PDFs, and which cannot be read and why.

Symbolic links are followed (a photo library often links folders in), but every directory is
entered once: a link back to an ancestor is a loop and is recorded, a second route to a folder
already walked is ignored. Hidden files and folders (``.thumbnails``, ``.git``) are left out.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.documents.images import IMAGE_SUFFIXES

HEIF_SUFFIXES = frozenset({".heic", ".heif"})
PDF_SUFFIXES = frozenset({".pdf"})
SUFFIXES = IMAGE_SUFFIXES | HEIF_SUFFIXES | PDF_SUFFIXES


@dataclass(frozen=True)
class Candidate:
    """A file to index (or to keep, if it has not changed)."""

    path: str
    folder: str
    kind: str  # "image" | "pdf"
    size: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True)
class Skip:
    """A file or folder that cannot be indexed, with a sentence saying why."""

    path: str
    folder: str
    reason: str


def printable(path: str) -> str:
    """A path as text the index can store and the protocol can send: bytes of a name that are
    not UTF-8 (a Latin-1 name from an old zip, say) appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _badly_named(entry: os.DirEntry[str], folder: str) -> Skip | None:
    """A file or folder whose name is not UTF-8 is skipped, with the way to index it."""
    try:
        is_folder = entry.is_dir(follow_symlinks=True)
    except OSError:
        is_folder = False
    if not is_folder and kind_of(entry.name) is None:
        return None  # not an image or a PDF: not worth a word
    what = "folder" if is_folder else "file"
    return Skip(
        printable(entry.path),
        folder,
        f"The {what} name is not valid UTF-8; rename the {what} to index it.",
    )


def kind_of(path: str) -> str | None:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in PDF_SUFFIXES:
        return "pdf"
    if suffix in IMAGE_SUFFIXES or suffix in HEIF_SUFFIXES:
        return "image"
    return None


def normalise_folder(folder: str) -> str:
    """The form a folder is stored in: absolute, user-expanded, links in the root resolved."""
    return str(Path(folder).expanduser().resolve())


def walk(folder: str, cancelled: Callable[[], bool] = lambda: False) -> Iterator[Candidate | Skip]:
    """Every indexable file under ``folder`` (already normalised), and every problem met."""
    root_stat = os.stat(folder)
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    # Each stack entry carries the chain of directories above it, to tell a loop from a
    # second route to the same folder.
    stack: list[tuple[str, frozenset[tuple[int, int]]]] = [
        (folder, frozenset({(root_stat.st_dev, root_stat.st_ino)}))
    ]
    while stack:
        if cancelled():
            return
        directory, ancestors = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except PermissionError:
            yield Skip(printable(directory), folder, "No permission to read this folder.")
            continue
        except OSError as exc:
            yield Skip(
                printable(directory), folder, f"This folder cannot be read ({exc.strerror})."
            )
            continue
        subdirectories: list[tuple[str, frozenset[tuple[int, int]]]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            outcome = _visit(entry, folder, ancestors, visited)
            if isinstance(outcome, tuple):
                subdirectories.append(outcome)
            elif outcome is not None:
                yield outcome
        stack.extend(reversed(subdirectories))  # depth first, in name order


def _visit(
    entry: os.DirEntry[str],
    folder: str,
    ancestors: frozenset[tuple[int, int]],
    visited: set[tuple[int, int]],
) -> Candidate | Skip | tuple[str, frozenset[tuple[int, int]]] | None:
    if not _utf8(entry.name):
        return _badly_named(entry, folder)
    try:
        info = entry.stat(follow_symlinks=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Skip(entry.path, folder, "A symbolic link loop (the link points to itself).")
        if entry.is_symlink():
            if kind_of(entry.name) is None:
                return None
            return Skip(entry.path, folder, "A broken symbolic link (its target is missing).")
        return Skip(entry.path, folder, f"Cannot be read ({exc.strerror}).")
    if stat.S_ISDIR(info.st_mode):
        key = (info.st_dev, info.st_ino)
        if key in ancestors:
            target = os.path.realpath(entry.path)
            return Skip(
                entry.path, folder, f"A symbolic link loop: it points back to {target}, above it."
            )
        if key in visited:
            return None  # reached again by another link: walked once already
        visited.add(key)
        return entry.path, ancestors | {key}
    if not stat.S_ISREG(info.st_mode):
        return None  # sockets, devices, FIFOs: never images
    kind = kind_of(entry.name)
    if kind is None:
        return None
    if info.st_size == 0:
        return Skip(entry.path, folder, "The file is empty (0 bytes).")
    return Candidate(
        path=entry.path,
        folder=folder,
        kind=kind,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
        ctime_ns=info.st_ctime_ns,
    )
