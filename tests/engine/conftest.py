"""Fixtures shared by the engine's tests."""

from __future__ import annotations

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small two-colour picture (a blue box on orange)."""
    path = tmp_path_factory.mktemp("picture") / "box.png"
    image = Image.new("RGB", (64, 48), (200, 120, 40))
    image.paste((20, 60, 200), (10, 10, 40, 30))
    image.save(path)
    return str(path)
