"""Fixtures shared by every test folder: tiny random models, built once per test session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Tiny models run fastest on one thread, and two processes (test + engine) share two cores.
# Set before torch is imported anywhere; engine subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A per-session tiny-model cache; set in os.environ so engine subprocesses inherit it."""
    path = tmp_path_factory.mktemp("tiny-cache")
    previous = os.environ.get("VISIONDESK_TINY_CACHE")
    os.environ["VISIONDESK_TINY_CACHE"] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("VISIONDESK_TINY_CACHE", None)
        else:
            os.environ["VISIONDESK_TINY_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_model(tiny_cache: Path) -> Callable[[str], Path]:
    """``tiny_model("llava") -> Path``: the family's tiny model, built once per session."""
    from engine.testing import tiny_model_path

    return tiny_model_path
