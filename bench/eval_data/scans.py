"""How a generated PDF reaches the model: as itself, rasterised at a DPI, or as a simulated scan."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any


def rasterise(pdf: Path, dpi: float) -> Any:
    """The first page of ``pdf`` as a PIL image at ``dpi`` (pypdfium2)."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf))
    try:
        return document[0].render(scale=dpi / 72).to_pil().convert("RGB")
    finally:
        document.close()


def simulate_scan(image: Any, rng: random.Random) -> Any:
    """A slightly rotated, blurred, noisy page on a grey-ish background, as a flatbed gives."""
    import numpy as np
    from PIL import Image, ImageFilter

    angle = rng.uniform(0.4, 1.6) * rng.choice((-1, 1))
    tinted = Image.new("RGB", image.size, (236, 234, 228))
    page = Image.blend(image, tinted, 0.12)
    page = page.rotate(
        angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(210, 208, 202)
    )
    page = page.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 0.7)))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 7, (page.height, page.width, 1))
    pixels = np.asarray(page, dtype=np.float32) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def deliver(source: Path, stem: Path, rendering: str, rng: random.Random) -> Path:
    """The file the model will get for ``rendering`` (native | png-<dpi> | scan-<dpi>)."""
    if rendering == "native":
        target = stem.with_suffix(source.suffix)
        source.replace(target)
        return target
    kind, _, dpi = rendering.partition("-")
    image = rasterise(source, float(dpi))
    if kind == "scan":
        target = stem.with_suffix(".jpg")
        simulate_scan(image, rng).save(target, format="JPEG", quality=rng.randint(45, 70))
    else:
        target = stem.with_suffix(".png")
        image.save(target, format="PNG")
    return target
