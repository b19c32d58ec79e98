"""Work done in the decode processes: read, hash, decode, thumbnail and preprocess one file.

These functions run in spawned worker processes (see ``engine.search.pipeline``), one file per
call, and return plain picklable values. They never raise for a bad file: the reason travels
back in ``Prepared.error`` as a sentence, and the index records it.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from engine.documents.images import MAX_FILE_BYTES, MAX_IMAGE_PIXELS

THUMB_QUALITY = 82


@dataclass(frozen=True)
class WorkerConfig:
    processor_path: str  # the model folder: its image processor runs here, not in the engine
    draft_side: int  # JPEGs are decoded at a reduced scale down to this short side
    thumb_side: int  # thumbnails fit in a square of this side
    pdf_side: int  # PDF pages are rendered with this long side
    known: frozenset[str] = frozenset()  # content keys that already have a vector
    trust_remote_code: bool = False


@dataclass(frozen=True)
class FileTask:
    path: str
    kind: str  # "image" | "pdf"


@dataclass(frozen=True)
class PageTask:
    path: str
    hash: str
    page: int


@dataclass
class Prepared:
    """One file (or PDF page), ready for the model; or why it is not."""

    path: str
    page: int = 0
    hash: str = ""
    pages: int = 1
    known: bool = False  # its content already has a vector: nothing was decoded
    pixels: Any = None  # numpy float32 (3, H, W): the processor's output
    thumbnail: bytes = b""
    width: int = 0
    height: int = 0
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def content_key(file_hash: str, page: int) -> str:
    return f"{file_hash}:{page}"


_config: WorkerConfig | None = None
_processor: Any = None
_init_error = ""


def init_worker(config: WorkerConfig) -> None:
    """Process initialiser. A failure is kept and reported by ``ping``: an initialiser that
    raises only leaves a broken pool behind, without the reason."""
    global _init_error
    # The engine cancels its decoders itself; a Ctrl-C reaching them would come back through
    # the futures as a KeyboardInterrupt, an internal error.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = "1"  # one thread each: the processes are the parallelism
    _exit_with_parent(os.getppid())
    try:
        import torch

        torch.set_num_threads(1)
        configure(config)
    except Exception as exc:  # any failure means the same to the user: it cannot start
        _init_error = f"{type(exc).__name__}: {exc}"


def configure(config: WorkerConfig) -> None:
    """Load the image processor for ``config`` in this process (a worker, or the engine)."""
    global _config, _init_error
    _config = config
    _init_error = ""
    _load(config)


def _exit_with_parent(parent: int) -> None:
    """A worker holds both ends of its task queue, so it never sees the queue close when the
    engine is killed; it watches its parent instead and leaves when that is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def ping() -> str:
    """Empty when the worker is ready, else why it is not."""
    return _init_error


def _load(config: WorkerConfig) -> None:
    global _processor
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow refuses bombs above this itself
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:  # HEIC files are then skipped as unreadable, with that reason
        pass
    from transformers import AutoImageProcessor

    _processor = AutoImageProcessor.from_pretrained(
        config.processor_path, trust_remote_code=config.trust_remote_code
    )


def prepare_file(task: FileTask) -> Prepared:
    assert _config is not None, "init_worker was not called"
    result = Prepared(path=task.path)
    if _init_error:
        result.error = f"The decoder could not start ({_init_error})."
        return result
    data = _read(task.path, result)
    if data is None:
        return result
    result.hash = hashlib.blake2b(data, digest_size=16).hexdigest()
    known = content_key(result.hash, 0) in _config.known
    if task.kind == "pdf":
        return _prepare_pdf_page(data, 0, result, count_only=known)
    if known:
        result.known = True
        return result
    try:
        image, size = decode_image(data, os.path.basename(task.path), _config.draft_side)
    except ValueError as exc:
        result.error = str(exc)
        return result
    _finish(image, result, size)
    return result


def prepare_page(task: PageTask) -> Prepared:
    result = Prepared(path=task.path, page=task.page, hash=task.hash)
    data = _read(task.path, result)
    if data is None:
        return result
    return _prepare_pdf_page(data, task.page, result, count_only=False)


def _read(path: str, result: Prepared) -> bytes | None:
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            result.error = f"The file is too large ({size / 2**20:.0f} MiB)."
            return None
        with open(path, "rb") as handle:
            data = handle.read()
    except PermissionError:
        result.error = "No permission to read this file."
        return None
    except FileNotFoundError:
        result.error = "The file disappeared while it was being indexed."
        return None
    except OSError as exc:
        result.error = f"{name} cannot be read ({exc.strerror or exc})."
        return None
    if not data:
        result.error = "The file is empty (0 bytes)."
        return None
    return data


def decode_image(data: bytes, name: str, draft_side: int) -> tuple[Any, tuple[int, int]]:
    """An upright RGB image and the file's own (upright) size; or ``ValueError`` with a sentence
    (the same limits as ``load_image``)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from engine.documents.images import _to_rgb

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"{name} is {width}×{height} pixels, more than the "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit."
                )
            if opened.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale when the result stays above what the model
                # and the thumbnail need: the largest speed-up for camera photos.
                opened.draft("RGB", (draft_side, draft_side))
            opened.seek(0)  # first frame of a GIF or multi-page TIFF
            opened.load()
            image = _to_rgb(ImageOps.exif_transpose(opened))
            scale = max(width, height) / max(opened.size)  # the draft's reduction, if any
            return image, (round(image.width * scale), round(image.height * scale))
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"{name} claims more than {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, which is how a "
            "decompression bomb looks; it was not opened."
        ) from exc
    except UnidentifiedImageError as exc:
        raise ValueError(f"{name} is not an image format VisionDesk can read.") from exc
    except (OSError, SyntaxError, EOFError) as exc:
        raise ValueError(f"{name} is damaged or truncated and cannot be read ({exc}).") from exc


def _prepare_pdf_page(data: bytes, page: int, result: Prepared, count_only: bool) -> Prepared:
    import pypdfium2 as pdfium

    assert _config is not None
    name = os.path.basename(result.path)
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        reason = str(exc).lower()
        if "password" in reason or "security" in reason:
            result.error = f"{name} is password-protected (encrypted)."
        else:
            result.error = f"{name} is damaged or not a PDF ({str(exc).rstrip('.')})."
        return result
    try:
        result.pages = len(document)
        if result.pages == 0:
            result.error = f"{name} has no pages (it may be truncated)."
            return result
        if count_only:
            result.known = True
            return result
        pdf_page = document[page]
        width_pt, height_pt = pdf_page.get_size()
        if width_pt <= 0 or height_pt <= 0:
            result.error = f"Page {page + 1} of {name} has no size."
            return result
        scale = _config.pdf_side / max(width_pt, height_pt)
        image = pdf_page.render(scale=scale).to_pil().convert("RGB")
    except pdfium.PdfiumError as exc:
        result.error = f"Page {page + 1} of {name} cannot be rendered ({str(exc).rstrip('.')})."
        return result
    finally:
        document.close()
    _finish(image, result, image.size)
    return result


def _finish(image: Any, result: Prepared, size: tuple[int, int]) -> None:
    """Preprocess for the model, then shrink into the thumbnail (in place, so it comes last)."""
    from PIL import Image

    assert _config is not None
    result.width, result.height = size
    result.pixels = _processor(images=[image], return_tensors="np")["pixel_values"][0]
    image.thumbnail((_config.thumb_side, _config.thumb_side), Image.Resampling.BICUBIC, 2.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=THUMB_QUALITY)
    result.thumbnail = buffer.getvalue()
