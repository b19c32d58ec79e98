"""Opening user images: orientation, colour modes, and clear refusals of bad files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from engine.documents.images import load_image
from engine.errors import BadInput


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` but carries almost no data (a 'bomb')."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").size == (20, 40)


def test_transparency_is_flattened_onto_white(tmp_path: Path) -> None:
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    loaded = load_image(tmp_path / "clear.png")
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16"])
def test_odd_colour_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    suffix = ".jpg" if mode == "CMYK" else ".png"
    Image.new(mode, (8, 8)).save(tmp_path / f"x{suffix}")
    assert load_image(tmp_path / f"x{suffix}").mode == "RGB"


def test_a_16_bit_greyscale_picture_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    """A scanner's or microscope's 16-bit PNG keeps its shades (Pillow alone clips it white)."""
    ramp = Image.new("I;16", (256, 4))
    ramp.putdata([x * 257 for x in range(256)] * 4)  # black to white over the 16-bit range
    ramp.save(tmp_path / "ramp16.png")
    loaded = load_image(tmp_path / "ramp16.png")
    assert [loaded.getpixel((x, 0)) for x in (0, 64, 128, 255)] == [
        (0, 0, 0), (64, 64, 64), (128, 128, 128), (255, 255, 255),
    ]  # fmt: skip


def test_first_frame_of_an_animated_gif(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    red, _, blue = load_image(tmp_path / "anim.gif").getpixel((0, 0))
    assert red > 200 and blue < 50


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(png_claiming(50_000, 50_000))
    with pytest.raises(BadInput, match="megapixel"):
        load_image(tmp_path / "bomb.png")


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("empty.png", b"", "empty"),
        ("notes.png", b"just some text", "not an image"),
        ("cut.jpg", None, "damaged or truncated"),
    ],
)
def test_bad_files_raise_bad_input_with_a_reason(tmp_path: Path, name, data, words) -> None:
    path = tmp_path / name
    if data is None:
        Image.new("RGB", (64, 64), (9, 9, 9)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(data)
    with pytest.raises(BadInput, match=words):
        load_image(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(BadInput, match="folder"):
        load_image(tmp_path)
