"""Work on images kept by content hash: the same picture is neither re-processed nor re-encoded.

The conversation cache (``prefix_cache``) covers follow-up turns. These cover the rest: a new
conversation about the same picture, extraction asking a page several questions, and the image
processor's resizing on every turn. Before a request the backend names its images (content
hashes from ``prefix_cache.image_key``); a call made for the same images with the same inputs
returns what the last one computed. Entries are kept most-recently-used first within a budget.

- ``FeatureCache`` wraps ``get_image_features`` of the inner model, the one method in which
  every image-text-to-text family in transformers encodes its images.
- ``PixelCache`` wraps the processor's image processor. Resizing and normalising a picture costs
  tens of milliseconds on the CPU (40 ms for a 336-px LLaVA image, 57 ms for a 1024x768
  Qwen2-VL one on two cores), a large part of a follow-up turn whose image is already in the KV
  cache. The processor still runs for the text (it expands each image placeholder from these
  outputs). The image processor keeps its class (a subclass is swapped in), so the processor's
  own checks and attributes are untouched.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any


class _ImageKeyedCache:
    """Outputs keyed by the current request's image hashes and the call's inputs."""

    def __init__(self, budget_bytes: int, entries: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.entries = entries
        self._cache: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self._bytes = 0  # the sizes in ``_cache``, summed
        self._images: tuple[str, ...] = ()
        self.hits = 0
        self.misses = 0

    @contextmanager
    def images(self, keys: tuple[str, ...]) -> Iterator[None]:
        """Name the images of the request that runs inside this block."""
        self._images = keys
        try:
            yield
        finally:
            self._images = ()

    def clear(self) -> None:
        self._cache.clear()
        self._bytes = 0

    def total_bytes(self) -> int:
        return self._bytes

    def _cached_call(
        self, compute: Callable[[], Any], key: tuple[Any, ...] | None, fresh: Callable[[Any], Any]
    ) -> Any:
        """``compute()``'s output for ``key``, computed once; ``fresh`` makes what is handed out."""
        if key is None:
            return compute()
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return fresh(found[0])
        self.misses += 1
        output = compute()
        size = sum(array.nbytes for array in _arrays(output))
        if size <= self.budget_bytes:
            self._cache[key] = (output, size)
            self._bytes += size
            while self._bytes > self.budget_bytes or (
                self.entries is not None and len(self._cache) > self.entries
            ):
                self._bytes -= self._cache.popitem(last=False)[1][1]
        return fresh(output)


class FeatureCache(_ImageKeyedCache):
    """Features of recent images, at most ``budget_bytes`` of them."""

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

    def _wrap(self, encode: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(encode)
        def cached(*args: Any, **kwargs: Any) -> Any:
            return self._cached_call(
                lambda: encode(*args, **kwargs), self._key(args, kwargs), lambda found: found
            )

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


class PixelCache(_ImageKeyedCache):
    """The image processor's output for recent images (at most ``entries`` of them)."""

    def __init__(self, entries: int = 8, budget_bytes: int = 256 * 2**20) -> None:
        super().__init__(budget_bytes, entries)

    def install(self, processor: Any) -> bool:
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is None or not callable(image_processor):
            return False
        cache = self
        base = type(image_processor)

        def __call__(self: Any, images: Any, *args: Any, **kwargs: Any) -> Any:
            key = cache._key(args, kwargs)
            # A copy each time: the processor may pop keys from what it gets.
            return cache._cached_call(
                lambda: base.__call__(self, images, *args, **kwargs), key, copy.copy
            )

        image_processor.__class__ = type(base.__name__, (base,), {"__call__": __call__})
        return True

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
        if not self._images:
            return None
        return (self._images, repr(args), repr(sorted(kwargs.items())))


def _arrays(value: Any) -> Iterator[Any]:
    """Every tensor or numpy array inside a model or processor output, tuple, list or dict."""
    if hasattr(value, "nbytes") and hasattr(value, "shape"):
        yield value
    elif isinstance(value, Mapping):  # ModelOutput and BatchFeature are mappings too
        for item in value.values():
            yield from _arrays(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _arrays(item)
