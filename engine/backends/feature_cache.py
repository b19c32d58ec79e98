"""Image features kept by content hash: the same picture is not encoded twice.

The conversation cache (``prefix_cache``) covers follow-up turns. This covers the rest: a new
conversation about the same picture, or extraction asking a page several questions. Every
image-text-to-text family in transformers encodes its images in one method of the inner model,
``get_image_features``; the backend wraps that method on the loaded model. Before a request it
names the request's images (their content hashes, from ``prefix_cache.image_key``); a call
whose pixel input has the same shape for the same images returns the features computed last
time. Entries are kept most-recently-used first within a byte budget.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class FeatureCache:
    """Features of recent images, at most ``budget_bytes`` of them."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self._images: tuple[str, ...] = ()
        self.hits = 0
        self.misses = 0

    def install(self, model: Any) -> bool:
        """Wrap the model's image encoder; False where the family has none to wrap."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
        owner = next(
            (
                candidate
                for candidate in (getattr(base, "model", None), base)
                if candidate is not None and hasattr(candidate, "get_image_features")
            ),
            None,
        )
        if owner is None:
            return False
        owner.get_image_features = self._wrap(owner.get_image_features)
        return True

    @contextmanager
    def images(self, keys: tuple[str, ...]) -> Iterator[None]:
        """Name the images of the request that runs inside this block."""
        self._images = keys
        try:
            yield
        finally:
            self._images = ()

    def clear(self) -> None:
        self._entries.clear()

    def total_bytes(self) -> int:
        return sum(size for _features, size in self._entries.values())

    def _wrap(self, encode: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(encode)
        def cached(*args: Any, **kwargs: Any) -> Any:
            key = self._key(args, kwargs)
            if key is None:
                return encode(*args, **kwargs)
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found[0]
            self.misses += 1
            features = encode(*args, **kwargs)
            self._store(key, features)
            return features

        return cached

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
        if not self._images:
            return None
        shapes = tuple(
            # Small tensors (grid sizes, image sizes) by value, pixel tensors by shape: the
            # pixels themselves follow from the images' content hashes.
            (
                name,
                tuple(value.shape),
                tuple(value.flatten().tolist()) if value.numel() <= 64 else (),
            )
            for name, value in [*enumerate(args), *sorted(kwargs.items())]
            if hasattr(value, "shape")
        )
        others = tuple(
            (name, value)
            for name, value in sorted(kwargs.items())
            if isinstance(value, (int, str, bool, type(None)))
        )
        return (self._images, shapes, others)

    def _store(self, key: tuple[Any, ...], features: Any) -> None:
        size = sum(tensor.nelement() * tensor.element_size() for tensor in _tensors(features))
        if size > self.budget_bytes:
            return
        self._entries[key] = (features, size)
        while self.total_bytes() > self.budget_bytes:
            self._entries.popitem(last=False)


def _tensors(value: Any) -> Iterator[Any]:
    """Every tensor inside a model output, tuple, list or dict."""
    if hasattr(value, "nelement"):
        yield value
    elif isinstance(value, dict):  # ModelOutput is a dict too
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


class PixelCache:
    """The image processor's output for recent images, by content hash.

    Resizing and normalising a picture costs tens of milliseconds on the CPU (40 ms for a
    336-px LLaVA image, 57 ms for a 1024x768 Qwen2-VL one on two cores), a large part of a
    follow-up turn whose image is already in the KV cache. The processor still runs for the
    text (it expands each image placeholder from these outputs); only its image half is reused.
    The wrapped image processor keeps its class (a subclass is swapped in), so the processor's
    own checks and attributes are untouched.
    """

    def __init__(self, entries: int = 8, budget_bytes: int = 256 * 2**20) -> None:
        self.entries = entries
        self.budget_bytes = budget_bytes
        self._cache: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self._images: tuple[str, ...] = ()
        self.hits = 0
        self.misses = 0

    def install(self, processor: Any) -> bool:
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is None or not callable(image_processor):
            return False
        cache = self
        base = type(image_processor)

        def __call__(self: Any, images: Any, *args: Any, **kwargs: Any) -> Any:
            key = cache._key(args, kwargs)
            if key is None:
                return base.__call__(self, images, *args, **kwargs)
            found = cache._cache.get(key)
            if found is not None:
                cache._cache.move_to_end(key)
                cache.hits += 1
                return copy.copy(found[0])
            cache.misses += 1
            output = base.__call__(self, images, *args, **kwargs)
            cache._store(key, output)
            return copy.copy(output)  # the processor may pop keys from what it gets

        image_processor.__class__ = type(base.__name__, (base,), {"__call__": __call__})
        return True

    @contextmanager
    def images(self, keys: tuple[str, ...]) -> Iterator[None]:
        self._images = keys
        try:
            yield
        finally:
            self._images = ()

    def clear(self) -> None:
        self._cache.clear()

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
        if not self._images:
            return None
        return (self._images, repr(args), repr(sorted(kwargs.items())))

    def _store(self, key: tuple[Any, ...], output: Any) -> None:
        size = sum(tensor.nbytes for tensor in _arrays(output))
        if size > self.budget_bytes:
            return
        self._cache[key] = (output, size)
        while len(self._cache) > self.entries or (
            sum(size for _output, size in self._cache.values()) > self.budget_bytes
        ):
            self._cache.popitem(last=False)


def _arrays(value: Any) -> Iterator[Any]:
    """Tensors and numpy arrays inside a processor output."""
    if hasattr(value, "nbytes") and hasattr(value, "shape"):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _arrays(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _arrays(item)
