"""Any input file as pages: formats, page ranges, limits, aspect ratio kept, long pages tiled."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from engine.documents import pages
from engine.errors import BadInput
from tests.engine.sample_documents import (
    INVOICE_LINES,
    page_image,
    write_bomb_png,
    write_pdf,
    write_tiff,
)

SMALL = pages.PixelBudget(long_side=400, max_pixels=400 * 300)


@pytest.mark.parametrize(
    ("suffix", "save_as", "expected_format"),
    [
        (".png", "PNG", "PNG"),
        (".jpg", "JPEG", "JPEG"),
        (".webp", "WEBP", "WEBP"),
        (".bmp", "BMP", "BMP"),
        (".gif", "GIF", "GIF"),
    ],
)
def test_single_page_image_formats_are_one_rgb_page(
    tmp_path: Path, suffix: str, save_as: str, expected_format: str
) -> None:
    path = tmp_path / f"scan{suffix}"
    page_image((300, 400)).save(path, format=save_as)
    info = pages.inspect(path)
    assert (info.kind, info.format, info.page_count) == ("image", expected_format, 1)
    page = pages.load_page(info, 1, SMALL)
    assert page.image.mode == "RGB" and page.image.size == (300, 400)
    assert page.text is None and page.tiles == [page.image]


def test_a_gif_gives_its_first_frame_only(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    red, blue = Image.new("RGB", (40, 40), "red"), Image.new("RGB", (40, 40), "blue")
    red.save(path, save_all=True, append_images=[blue], duration=100)
    info = pages.inspect(path)
    assert info.page_count == 1
    assert pages.load_page(info, 1).image.getpixel((20, 20))[0] > 200  # red, not blue


def test_every_page_of_a_multipage_tiff_is_a_page(tmp_path: Path) -> None:
    info = pages.inspect(write_tiff(tmp_path / "fax.tiff", pages=3))
    assert (info.format, info.page_count) == ("TIFF", 3)
    images = [pages.load_page(info, n, SMALL).image for n in (1, 2, 3)]
    assert len({image.tobytes() for image in images}) == 3  # three different pages


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    page_image((400, 300)).save(path, exif=exif.tobytes())
    page = pages.load_page(pages.inspect(path), 1, SMALL)
    assert page.image.size == (300, 400)


def test_a_pdf_page_carries_its_text_layer_and_dpi(tmp_path: Path) -> None:
    info = pages.inspect(write_pdf(tmp_path / "invoice.pdf", [INVOICE_LINES, ["two"]]))
    assert (info.kind, info.page_count, len(info.sha256)) == ("pdf", 2, 64)
    page = pages.load_page(info, 1, pages.PixelBudget(long_side=400, max_pixels=10**6))
    assert max(page.image.size) == 400
    assert page.dpi == pytest.approx(400 / 11, rel=0.01)
    # With a pixel limit too, the DPI is chosen so that the page needs no resampling.
    capped = pages.load_page(info, 1, SMALL)
    assert capped.image.width * capped.image.height <= SMALL.max_pixels
    assert capped.source_size == capped.image.size
    assert page.has_text_layer and "Total 34.51 EUR" in (page.text or "")


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="decompression bomb|megapixel"):
        pages.inspect(write_bomb_png(tmp_path / "bomb.png"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", r"empty \(0 bytes\)"),
        ("notes.pdf", b"just some text\n", "named like a PDF but is not one"),
        ("notes.png", b"just some text\n", "not an image format"),
    ],
)
def test_unreadable_files_get_a_clear_sentence(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadInput, match=message):
        pages.inspect(path)


def test_a_missing_file_and_a_folder_are_reported(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        pages.inspect(tmp_path / "nope.pdf")
    with pytest.raises(BadInput, match="folder"):
        pages.inspect(tmp_path)


# --- page selection ----------------------------------------------------------------------------


def _info(count: int) -> pages.DocumentInfo:
    return pages.DocumentInfo(Path("doc.pdf"), "pdf", "PDF", count, "0" * 64, 1)


def test_page_specs_parse_ranges_lists_and_open_ends() -> None:
    assert pages.parse_page_spec("1-3,5") == [1, 2, 3, 5]
    assert pages.select_pages(_info(10), spec="8-") == [8, 9, 10]
    assert pages.select_pages(_info(4), spec="3-9") == [3, 4]  # a range is clipped
    assert pages.select_pages(_info(4), pages=[4, 2, 2]) == [2, 4]
    for bad in ("", "0", "3-1", "a-b", "1,,2"):
        with pytest.raises(BadInput):
            pages.select_pages(_info(4), spec=bad or " ")


def test_a_page_that_does_not_exist_is_named() -> None:
    with pytest.raises(BadInput, match="page 7 does not exist"):
        pages.select_pages(_info(3), pages=[1, 7])
    with pytest.raises(BadInput, match="none of them"):
        pages.select_pages(_info(3), spec="5-6")


def test_a_500_page_pdf_over_the_page_limit_is_refused_unless_a_range_is_chosen(
    tmp_path: Path,
) -> None:
    big = write_pdf(tmp_path / "big.pdf", [[f"page {n}"] for n in range(500)])
    info = pages.inspect(big)
    assert info.page_count == 500
    with pytest.raises(BadInput, match="500 pages to read, more than the limit of 50"):
        pages.select_pages(info, max_pages=50)
    assert pages.select_pages(info, spec="10-12", max_pages=50) == [10, 11, 12]


# --- budget and tiles --------------------------------------------------------------------------


def test_fit_within_keeps_the_aspect_ratio_and_never_enlarges_or_crops() -> None:
    wide = Image.new("RGB", (3000, 1000))
    fitted = pages.fit_within(wide, 1500, 10**9)
    assert fitted.size == (1500, 500)
    assert pages.fit_within(Image.new("RGB", (200, 100)), 1500, 10**9).size == (200, 100)
    square = pages.fit_within(Image.new("RGB", (2000, 2000)), 4000, 1_000_000)
    assert square.size == (1000, 1000)


def test_a_long_receipt_is_cut_into_overlapping_tiles_that_cover_it() -> None:
    budget = pages.PixelBudget(long_side=800, max_pixels=800 * 600)
    boxes = pages.tile_boxes(600, 4000, budget)
    assert len(boxes) > 1
    assert boxes[0][1] == 0 and boxes[-1][3] == 4000  # top to bottom
    for _, _, right, _ in boxes:
        assert right == 600  # full width: nothing cropped sideways
    for before, after in zip(boxes, boxes[1:], strict=False):
        overlap = before[3] - after[1]
        length = before[3] - before[1]
        assert overlap == pytest.approx(budget.tile_overlap * length, abs=2)


def test_a_normal_page_is_not_tiled_and_a_wide_screenshot_is_tiled_sideways() -> None:
    budget = pages.PixelBudget()
    assert pages.tile_boxes(1240, 1754, budget) == [(0, 0, 1240, 1754)]
    boxes = pages.tile_boxes(6000, 800, budget)
    assert len(boxes) > 1 and all(top == 0 and bottom == 800 for _, top, _, bottom in boxes)


def test_a_long_receipt_image_becomes_a_page_with_tiles_inside_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "receipt.png"
    page_image((500, 3000)).save(path)
    budget = pages.PixelBudget(long_side=600, max_pixels=600 * 450)
    page = pages.load_page(pages.inspect(path), 1, budget)
    assert len(page.tiles) >= 3
    assert all(
        max(tile.size) <= 600 and tile.width * tile.height <= 600 * 450 for tile in page.tiles
    )
    assert page.image.size == (100, 600)  # the whole page, shrunk but never cropped
    assert page.tiles[0].width > 4 * page.image.width  # each tile keeps far more detail
    assert "tiled" in page.notes[0]
