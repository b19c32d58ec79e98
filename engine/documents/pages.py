"""Any input file as pages: PDF, PNG, JPEG, WebP, TIFF (every page), GIF (first frame), BMP.

A page is an upright RGB image inside the model's pixel budget, never centre-cropped: it is
resized keeping its aspect ratio, and a very long or very wide page (a till receipt, a scrolled
screenshot) is also cut into overlapping tiles along its long side so that small print survives.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.documents import pdf
from engine.documents.images import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, load_image
from engine.errors import BadInput
from engine.protocol.wording import counted

if TYPE_CHECKING:
    from PIL import Image

SUPPORTED_SUFFIXES = frozenset(IMAGE_SUFFIXES | {".pdf"})


@dataclass(frozen=True)
class PixelBudget:
    """How many pixels one page may give the model (about 1300–1600 px on the long side)."""

    long_side: int = 1536
    max_pixels: int = 1536 * 1152
    tile_aspect: float = 2.5  # a page longer than this (long side / short side) is tiled
    tile_overlap: float = 0.12  # share of a tile repeated in the next one
    max_tiles: int = 8


@dataclass(frozen=True)
class DocumentInfo:
    path: Path
    kind: str  # "pdf" or "image"
    format: str  # "PDF", "PNG", "TIFF", …
    page_count: int
    sha256: str
    size_bytes: int
    page_sizes: tuple[tuple[float, float], ...] = ()  # PDF pages in points


@dataclass
class Page:
    number: int  # 1-based
    image: Image.Image  # the whole page, within the budget
    tiles: list[Image.Image]  # what the model sees: [image], or overlapping tiles of a long page
    text: str | None = None  # the PDF's text layer; None for images
    dpi: float | None = None
    source_size: tuple[int, int] = (0, 0)  # pixels before resizing
    notes: list[str] = field(default_factory=list)

    @property
    def has_text_layer(self) -> bool:
        return bool(self.text and len("".join(self.text.split())) >= 20)


# ---------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect(path: str | Path) -> DocumentInfo:
    """What the file is and how many pages it has, or ``BadInput`` saying why it cannot be read."""
    file = Path(path).expanduser()
    if not file.exists():
        raise BadInput(f"File not found: {file}")
    if file.is_dir():
        raise BadInput(f"Expected a file but got a folder: {file}")
    size = file.stat().st_size
    if size == 0:
        raise BadInput(f"{file.name} is empty (0 bytes).")
    with file.open("rb") as handle:
        head = handle.read(1024)
    if pdf.is_pdf(head) or file.suffix.lower() == ".pdf":
        info = pdf.pdf_info(file)  # raises for a text file named .pdf, encryption, damage
        sizes = tuple(info.sizes_pt)
        return DocumentInfo(file, "pdf", "PDF", info.page_count, file_sha256(file), size, sizes)
    image_format, frames = _image_frames(file)
    return DocumentInfo(file, "image", image_format, frames, file_sha256(file), size)


def _image_frames(file: Path) -> tuple[str, int]:
    """Format and page count of an image; decodes the first page to catch damage early."""
    from PIL import Image, UnidentifiedImageError

    load_image(file)  # every check of a normal image: bombs, truncation, unknown formats
    try:
        with Image.open(file) as opened:
            image_format = str(opened.format or file.suffix.lstrip(".").upper())
            # Only TIFF pages are pages; GIF and WebP frames are animation (first frame only).
            frames = int(getattr(opened, "n_frames", 1)) if image_format == "TIFF" else 1
    except (UnidentifiedImageError, OSError) as exc:  # pragma: no cover - load_image ran first
        raise BadInput(f"{file.name} is not an image format VisionDesk can read.") from exc
    return image_format, max(1, frames)


def select_pages(
    info: DocumentInfo,
    pages: list[int] | None = None,
    spec: str | None = None,
    max_pages: int | None = None,
) -> list[int]:
    """The 1-based page numbers to read, checked against the document and the page limit.

    ``pages`` must all exist; a range in ``spec`` ("1-3,5,8-") is clipped to the document.
    """
    name, count = info.path.name, info.page_count
    if pages is not None:
        missing = [n for n in pages if not 1 <= n <= count]
        if missing:
            raise BadInput(
                f"{name} has {counted(count, 'page')}; page {missing[0]} does not exist."
            )
        chosen = sorted(set(pages))
    elif spec:
        chosen = [n for n in parse_page_spec(spec) if n <= count] if spec.strip() else []
        if not chosen:
            raise BadInput(f"{name} has {counted(count, 'page')}; none of them is in {spec!r}.")
        chosen = sorted(set(chosen))
    else:
        chosen = list(range(1, count + 1))
    if max_pages is not None and len(chosen) > max_pages:
        raise BadInput(
            f"{name} has {len(chosen)} pages to read, more than the limit of {max_pages}; "
            "choose a page range."
        )
    return chosen


_SPEC_PART = re.compile(r"^\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?$")
_OPEN_END = 1_000_000  # "8-" means "from page 8 to the end"; clipped to the document later


def parse_page_spec(spec: str) -> list[int]:
    """'1-3,5,8-' → [1, 2, 3, 5, 8, …] (open ranges end at a large number; clip them)."""
    numbers: list[int] = []
    for part in spec.split(","):
        match = _SPEC_PART.match(part)
        if not match:
            raise BadInput(f"{spec!r} is not a page range; write it like 1-3,5,8-")
        first = int(match.group(1))
        last = first if not match.group(2) else int(match.group(3) or _OPEN_END)
        if first < 1 or last < first:
            raise BadInput(f"{part.strip()!r} is not a page range (pages count from 1).")
        numbers.extend(range(first, min(last, _OPEN_END) + 1))
    return numbers


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------


def load_page(info: DocumentInfo, number: int, budget: PixelBudget | None = None) -> Page:
    """Page ``number`` (1-based) of a document, inside ``budget``, tiled if very long or wide."""
    budget = budget or PixelBudget()
    if info.kind == "pdf":
        rendered = pdf.render_page(info.path, number - 1, _pdf_long_side(info, number, budget))
        image = rendered.to_image()
        page = Page(number, image, [], rendered.text, rendered.dpi, (image.width, image.height))
    else:
        image = load_image(info.path) if number == 1 else _tiff_page(info.path, number - 1)
        page = Page(number, image, [], None, None, (image.width, image.height))
    page.tiles = tiles(page.image, budget)
    page.image = fit_within(page.image, budget.long_side, budget.max_pixels)
    if len(page.tiles) > 1:
        page.notes.append(f"tiled into {len(page.tiles)} overlapping parts")
    return page


def _pdf_long_side(info: DocumentInfo, number: int, budget: PixelBudget) -> int:
    """Render a long page with more pixels, so each of its tiles keeps a readable resolution."""
    if not info.page_sizes:
        return budget.long_side
    width, height = info.page_sizes[number - 1]
    aspect = max(width, height) / max(1e-6, min(width, height))
    if aspect <= budget.tile_aspect:
        # The DPI that meets both limits, so the page needs no resampling after rendering
        # (the short side is rounded up by the renderer, hence the loop).
        long = int(min(budget.long_side, math.sqrt(budget.max_pixels * aspect)))
        while long > 1 and long * math.ceil(long / aspect) > budget.max_pixels:
            long -= 1
        return long
    short = budget.long_side / 1.4  # a tile about as tall as a portrait page
    return int(min(short * aspect, budget.long_side * budget.max_tiles))


def _tiff_page(path: Path, index: int) -> Image.Image:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            opened.seek(index)
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadInput(
                    f"Page {index + 1} of {path.name} is {width}×{height} pixels, more than the "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit."
                )
            opened.load()
            frame = ImageOps.exif_transpose(opened)
            return _flatten(frame)
    except BadInput:
        raise
    except EOFError as exc:
        raise BadInput(f"{path.name} has no page {index + 1}.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"Page {index + 1} of {path.name} is damaged ({exc}).") from exc


def _flatten(image: Image.Image) -> Image.Image:
    from PIL import Image

    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return image.convert("RGB")


def fit_within(image: Image.Image, long_side: int, max_pixels: int) -> Image.Image:
    """Shrink (never enlarge, never crop) so both limits hold; the aspect ratio is kept."""
    from PIL import Image

    width, height = image.size
    scale = min(1.0, long_side / max(width, height), math.sqrt(max_pixels / (width * height)))
    if scale >= 1.0:
        return image
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def tile_boxes(width: int, height: int, budget: PixelBudget) -> list[tuple[int, int, int, int]]:
    """Overlapping crops along the long side for extreme aspect ratios; one box otherwise."""
    long, short = max(width, height), min(width, height)
    if long / max(1, short) <= budget.tile_aspect:
        return [(0, 0, width, height)]
    target = short * 1.4  # each tile about as long as a portrait page
    count = math.ceil((long - target * budget.tile_overlap) / (target * (1 - budget.tile_overlap)))
    count = max(2, min(budget.max_tiles, count))
    # n tiles of length t overlapping by o·t cover t·(n − (n−1)·o) = long.
    length = long / (count - (count - 1) * budget.tile_overlap)
    step = length * (1 - budget.tile_overlap)
    boxes = []
    for index in range(count):
        start = round(index * step)
        end = long if index == count - 1 else min(long, round(index * step + length))
        if height >= width:
            boxes.append((0, start, width, end))
        else:
            boxes.append((start, 0, end, height))
    return boxes


def tiles(image: Image.Image, budget: PixelBudget) -> list[Image.Image]:
    """The images the model sees for one page, each inside the budget."""
    boxes = tile_boxes(image.width, image.height, budget)
    if len(boxes) == 1:
        return [fit_within(image, budget.long_side, budget.max_pixels)]
    return [fit_within(image.crop(box), budget.long_side, budget.max_pixels) for box in boxes]
