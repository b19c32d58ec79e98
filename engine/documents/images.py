"""Opening user images safely: clear errors, EXIF orientation, RGB, and a pixel limit."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import BadInput

# The pixel limit is larger than any real scan at 600 DPI (A3 ≈ 7016 × 9921 ≈ 70 MP) but far
# below what a crafted "decompression bomb" claims; Pillow's own default warns at 89 MP and
# refuses at 179 MP. Both limits live in the protocol, where the window reads them too.
from engine.protocol.base import MAX_FILE_BYTES, MAX_IMAGE_PIXELS

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_FILE_BYTES",
    "MAX_IMAGE_PIXELS",
    "load_image",
    "pad_to_aspect",
]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif"}
)


def load_image(path: str | os.PathLike[str], max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open one image file as an upright RGB ``PIL.Image``, or raise ``BadInput`` saying why."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    file = Path(path)
    if not file.exists():
        raise BadInput(f"Image not found: {file}")
    if file.is_dir():
        raise BadInput(f"Expected an image file but got a folder: {file}")
    size = file.stat().st_size
    if size == 0:
        raise BadInput(f"Image file is empty (0 bytes): {file.name}")
    if size > MAX_FILE_BYTES:
        raise BadInput(f"Image file is too large ({size / 2**20:.0f} MiB): {file.name}")

    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # makes Pillow raise DecompressionBombError above it
    try:
        with Image.open(file) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise BadInput(
                    f"{file.name} is {width}×{height} pixels, more than the "
                    f"{max_pixels / 1e6:.0f}-megapixel limit; scale it down first."
                )
            opened.seek(0)  # first frame of GIF / multi-page TIFF
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return _to_rgb(image)
    except BadInput:
        raise
    except Image.DecompressionBombError as exc:
        raise BadInput(
            f"{file.name} claims more than {max_pixels / 1e6:.0f} megapixels, which is how a "
            "decompression bomb looks; it was not opened."
        ) from exc
    except UnidentifiedImageError as exc:
        raise BadInput(f"{file.name} is not an image format VisionDesk can read.") from exc
    except PermissionError as exc:
        raise BadInput(f"No permission to read {file.name}.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"{file.name} is damaged or truncated and cannot be read ({exc}).") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white (documents are dark on light) and convert to RGB."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit greyscale (scanners, microscopes, medical exports): scaled to 8 bits. Pillow's
        # own conversion clips every value above 255, which turns such a picture white.
        return _to_rgb(image.convert("I").point(lambda value: value * (255 / 65535)).convert("L"))
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def pad_to_aspect(image: Image.Image, max_aspect: float) -> Image.Image:
    """A very long strip padded with white (documents are dark on light) until its long side is
    at most ``max_aspect`` times the short one; nothing is cropped. Others are returned as is."""
    from PIL import Image

    width, height = image.size
    long, short = max(width, height), max(1, min(width, height))
    if long / short <= max_aspect:
        return image
    side = math.ceil(long / max_aspect)
    size = (width, side) if width >= height else (side, height)
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(image.convert("RGB"), ((size[0] - width) // 2, (size[1] - height) // 2))
    return canvas
