"""Generated sample images (photos, receipts, charts, screenshots, whiteboards, documents).

Used where a folder of real-looking images is needed without shipping any: the throughput
benchmark (decoding cost close to real JPEG photos), the demo and screenshot of the Search view,
and tests. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS = ("photo", "receipt", "chart", "screenshot", "whiteboard", "document")


def make_image(kind: str, size: tuple[int, int], seed: int) -> Any:
    """One RGB ``PIL.Image`` of ``kind``."""
    return _MAKERS[kind](size, random.Random(seed))


def write_samples(
    folder: Path,
    count: int,
    size: tuple[int, int] = (1024, 768),
    kinds: tuple[str, ...] = KINDS,
    suffix: str = ".jpg",
    seed: int = 0,
    noise: bool = True,
) -> list[Path]:
    """``count`` images in ``folder`` named ``<kind>-<n>.<suffix>``. With ``noise`` a photo has
    sensor-like grain, so a JPEG decodes as slowly as a real one."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        kind = kinds[index % len(kinds)]
        image = make_image(kind, size, seed * 100_003 + index)
        if noise and kind == "photo":
            image = _grain(image, seed + index)
        path = folder / f"{kind}-{index:05d}{suffix}"
        image.save(path, quality=90) if suffix in (".jpg", ".jpeg", ".webp") else image.save(path)
        paths.append(path)
    return paths


def _grain(image: Any, seed: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, dtype=np.int16)
    pixels = pixels + rng.integers(-12, 13, size=pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _photo(size: tuple[int, int], rng: random.Random) -> Any:
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    top = (rng.randint(40, 120), rng.randint(90, 170), rng.randint(180, 255))
    bottom = (rng.randint(200, 255), rng.randint(140, 210), rng.randint(90, 160))
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line(
            [(0, y), (width, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    sun = rng.randint(width // 5, 4 * width // 5), rng.randint(height // 8, height // 3)
    radius = rng.randint(height // 14, height // 8)
    draw.ellipse(
        (sun[0] - radius, sun[1] - radius, sun[0] + radius, sun[1] + radius), fill=(255, 236, 170)
    )
    for layer in range(3):
        shade = 40 + layer * 35
        colour = (shade // 2, shade, shade // 2 + rng.randint(0, 30))
        base = int(height * (0.55 + 0.12 * layer))
        points = [(0, height)]
        for x in range(0, width + 80, 80):
            points.append((x, base - rng.randint(0, height // 4)))
        points.append((width, height))
        draw.polygon(points, fill=colour)
    return image


def _paper(
    size: tuple[int, int], colour: tuple[int, int, int] = (250, 250, 246)
) -> tuple[Any, Any]:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, colour)
    return image, ImageDraw.Draw(image)


def _receipt(size: tuple[int, int], rng: random.Random) -> Any:
    width, height = size
    image, draw = _paper(size, (236, 232, 224))
    left, right = width // 4, 3 * width // 4
    pad = max(2, (right - left) // 12)
    draw.rectangle((left, 0, right, height), fill=(253, 253, 250))
    line = max(3, height // 40)
    y = height // 14
    draw.rectangle((left + pad, y, right - pad, y + 2 * line), fill=(40, 40, 40))
    y += 4 * line
    for _ in range(rng.randint(6, 12)):
        if y > height - 6 * line:
            break
        item = left + pad + rng.randint((right - left) // 6, (right - left) // 2)
        draw.rectangle((left + pad, y, item, y + line // 2), fill=(90, 90, 90))
        draw.rectangle((right - 4 * pad, y, right - pad, y + line // 2), fill=(90, 90, 90))
        y += int(1.6 * line)
    draw.line((left + pad, y + line, right - pad, y + line), fill=(60, 60, 60), width=2)
    draw.rectangle((right - 5 * pad, y + 2 * line, right - pad, y + 3 * line), fill=(20, 20, 20))
    return image


def _chart(size: tuple[int, int], rng: random.Random) -> Any:
    width, height = size
    image, draw = _paper(size, (255, 255, 255))
    margin = width // 10
    draw.line((margin, margin, margin, height - margin), fill=(120, 120, 120), width=3)
    draw.line(
        (margin, height - margin, width - margin, height - margin), fill=(120, 120, 120), width=3
    )
    bars = rng.randint(4, 8)
    step = (width - 2 * margin) / bars
    palette = [(59, 130, 246), (16, 185, 129), (245, 158, 11), (239, 68, 68), (139, 92, 246)]
    colour = rng.choice(palette)
    for index in range(bars):
        top = rng.randint(margin + height // 20, height - margin - height // 10)
        x = margin + index * step + step * 0.2
        draw.rectangle((x, top, x + step * 0.6, height - margin - 2), fill=colour)
    draw.rectangle(
        (width // 3, margin // 3, 2 * width // 3, margin // 3 + margin // 4), fill=(30, 41, 59)
    )
    return image


def _screenshot(size: tuple[int, int], rng: random.Random) -> Any:
    width, height = size
    image, draw = _paper(size, (229, 231, 235))
    bar = max(8, height // 22)
    unit = max(2, width // 60)
    draw.rectangle((0, 0, width, bar), fill=(55, 65, 81))
    for index, colour in enumerate(((239, 68, 68), (245, 158, 11), (34, 197, 94))):
        x = unit + index * bar
        draw.ellipse((x, bar // 4, x + bar // 2, bar // 4 + bar // 2), fill=colour)
    draw.rectangle((0, bar, width // 4, height), fill=(243, 244, 246))
    for y in range(bar + 2 * unit, height - 2 * unit, bar + unit):
        draw.rectangle((unit, y, width // 4 - 2 * unit, y + bar // 3), fill=(156, 163, 175))
    y = bar + 3 * unit
    while y < height - 3 * unit:
        end = width // 4 + 3 * unit + rng.randint(width // 5, width // 2)
        draw.rectangle((width // 4 + 3 * unit, y, end, y + bar // 3), fill=(75, 85, 99))
        y += bar
    return image


def _whiteboard(size: tuple[int, int], rng: random.Random) -> Any:
    width, height = size
    image, draw = _paper(size, (120, 113, 108))
    board = (width // 16, height // 12, width - width // 16, height - height // 8)
    draw.rectangle(board, fill=(248, 250, 252))
    marker = rng.choice([(37, 99, 235), (220, 38, 38), (22, 163, 74)])
    pen = max(1, width // 250)
    base = board[3] - (board[3] - board[1]) // 8
    for index in range(5):
        bar = rng.randint((base - board[1]) // 5, 3 * (base - board[1]) // 4)
        x = board[0] + width // 16 + index * width // 12
        draw.rectangle((x, base - bar, x + width // 20, base), outline=marker, width=2 * pen)
    for row in range(4):
        y = board[1] + (row + 1) * (board[3] - board[1]) // 6
        right = board[2] - rng.randint(width // 20, width // 6)
        draw.line((width // 2 + width // 10, y, right, y), fill=(30, 30, 30), width=2 * pen)
    return image


def _document(size: tuple[int, int], rng: random.Random) -> Any:
    width, height = size
    image, draw = _paper(size, (214, 211, 209))
    page = (width // 5, height // 40, 4 * width // 5, height - height // 40)
    draw.rectangle(page, fill=(255, 255, 255))
    margin = max(2, (page[2] - page[0]) // 10)
    line = max(1, height // 110)
    y = page[1] + margin
    draw.rectangle(
        (page[0] + margin, y, page[0] + (page[2] - page[0]) // 2, y + 2 * line), fill=(17, 24, 39)
    )
    y += 5 * line
    while y < page[3] - margin:
        end = page[2] - margin - rng.randint(0, (page[2] - page[0]) // 3)
        draw.rectangle(
            (page[0] + margin, y, max(end, page[0] + 2 * margin), y + line), fill=(107, 114, 128)
        )
        y += 3 * line if rng.random() > 0.15 else 6 * line
    return image


_MAKERS: dict[str, Callable[[tuple[int, int], random.Random], Any]] = {
    "photo": _photo,
    "receipt": _receipt,
    "chart": _chart,
    "screenshot": _screenshot,
    "whiteboard": _whiteboard,
    "document": _document,
}
