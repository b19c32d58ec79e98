"""The key/value cache of the last conversation, kept so a follow-up turn only prefills new tokens.

A follow-up question about the same image must not re-encode the image nor re-read the
conversation so far. After each answer the engine keeps the model's KV cache together with the
token ids it covers and the content hashes of the images it saw. The next request reuses the
longest common token prefix, provided the images are the same and every image token lies inside
that prefix: then the vision tower is not called at all and only the new tokens are prefilled.
An edited earlier message simply shortens the common prefix (the cache is cropped there), and a
changed image drops the cache, so a reused answer always equals a fresh one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import BadInput

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    token_ids: list[int]
    image_keys: tuple[str, ...]
    cache: Any  # a transformers Cache, extended in place by generate()


class PrefixCache:
    """At most one conversation's cache, and at most ``budget_bytes`` of it."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entry: _Entry | None = None

    def take(
        self, input_ids: list[int], image_keys: tuple[str, ...], image_token_ids: set[int]
    ) -> tuple[Any, int] | None:
        """The cache cropped to what ``input_ids`` shares with it, and that length; or None.

        The entry is handed over (generate() extends it in place), so it is never used twice."""
        entry, self._entry = self._entry, None
        if entry is None or entry.image_keys != image_keys:
            return None
        common = 0
        for cached, new in zip(entry.token_ids, input_ids, strict=False):
            if cached != new:
                break
            common += 1
        common = min(common, len(input_ids) - 1)  # generate() needs one token to prefill
        if common < 1 or any(token in image_token_ids for token in input_ids[common:]):
            return None
        surplus = int(entry.cache.get_seq_length()) - common
        if surplus > 0:
            try:
                entry.cache.crop(-surplus)  # transformers 5: a negative count removes tokens
            except (RuntimeError, ValueError) as exc:  # e.g. a sliding window that moved on
                log.info("conversation cache not reusable: %s", exc)
                return None
        return entry.cache, common

    def store(self, token_ids: list[int], image_keys: tuple[str, ...], cache: Any) -> None:
        size = cache_bytes(cache)
        if size > self.budget_bytes:
            log.info("not keeping a %.0f MiB conversation cache (budget %.0f MiB)",
                     size / 2**20, self.budget_bytes / 2**20)  # fmt: skip
            self._entry = None
            return
        self._entry = _Entry(token_ids, image_keys, cache)

    def clear(self) -> None:
        self._entry = None


def cache_bytes(cache: Any) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if tensor is not None and hasattr(tensor, "nelement"):
                total += tensor.nelement() * tensor.element_size()
    return total


_KEYS: OrderedDict[tuple[str, int, int, int], str] = OrderedDict()  # file version -> hash
_KEYS_LOCK = threading.Lock()
_KEYS_KEPT = 256


def image_key(path: str) -> str:
    """Content hash of an image file: the same picture under another name is the same image.

    Remembered per version of the file (its path, size, modification time and inode), so each
    turn of a conversation about a large photo does not read and hash it again."""
    file = Path(path)
    try:
        info = file.stat()
        version = (str(file.resolve()), info.st_size, info.st_mtime_ns, info.st_ino)
        with _KEYS_LOCK:
            key = _KEYS.get(version)
        if key is None:
            key = _file_digest(file)
    except OSError as exc:
        from engine.documents.images import load_image

        load_image(file)  # raises what is wrong in the person's words: missing, a folder…
        raise BadInput(f"Image not readable: {file.name} ({exc.strerror or exc})") from exc
    with _KEYS_LOCK:
        _KEYS[version] = key
        _KEYS.move_to_end(version)
        while len(_KEYS) > _KEYS_KEPT:
            _KEYS.popitem(last=False)
    return key


def _file_digest(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_token_ids(config: Any) -> set[int]:
    """Ids of the placeholder tokens that stand for image (or video) content in the prompt."""
    ids: set[int] = set()
    for name in dir(config):
        if ("image" in name or "vision" in name or "video" in name) and name.endswith(
            ("token_id", "token_index")
        ):
            value = getattr(config, name, None)
            if isinstance(value, int):
                ids.add(value)
    return ids
