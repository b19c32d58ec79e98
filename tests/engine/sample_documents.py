"""Sample documents made on the spot for extraction tests: good and bad PDFs and images."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw


def pdf_bytes(pages: list[list[str]], size: tuple[float, float] = (612, 792)) -> bytes:
    """A minimal PDF with a real text layer: one Helvetica text block per page."""
    width, height = size
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [{kids}] /Count {count} >>".format(
            kids=" ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages))), count=len(pages)
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for index, lines in enumerate(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * index} 0 R >>"
        )
        shown = " ".join(f"({_escape(line)}) Tj T*" for line in lines)
        body = f"BT /F1 14 Tf 40 {height - 60} Td 18 TL {shown} ET"
        objects.append(f"<< /Length {len(body)} >>\nstream\n{body}\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


INVOICE_LINES = [
    "INVOICE 2024-017",
    "Date: 2024-03-05",
    "Seller: Acme Tools GmbH",
    "Widget  2 x 12.50 = 25.00",
    "Bolt    10 x 0.40 = 4.00",
    "Subtotal 29.00",
    "VAT 5.51",
    "Total 34.51 EUR",
]


def write_pdf(path: Path, pages: list[list[str]] | None = None, **kwargs: object) -> Path:
    path.write_bytes(pdf_bytes(pages or [INVOICE_LINES], **kwargs))  # type: ignore[arg-type]
    return path


def write_encrypted_pdf(path: Path, password: str = "secret") -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes([INVOICE_LINES]))))
    writer.encrypt(password)
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def write_truncated_pdf(path: Path) -> Path:
    data = pdf_bytes([INVOICE_LINES, ["second page"]])
    path.write_bytes(data[: len(data) // 2])
    return path


def write_bomb_png(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A tiny PNG whose header claims a huge size: what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def page_image(size: tuple[int, int] = (600, 800), text: str = "Total 34.51") -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for row in range(0, size[1] - 20, 40):
        draw.text((20, row + 10), f"{text} line {row // 40}", fill="black")
    return image


def write_tiff(path: Path, pages: int = 3) -> Path:
    frames = [page_image(text=f"page {n + 1}") for n in range(pages)]
    frames[0].save(path, save_all=True, append_images=frames[1:], format="TIFF")
    return path


def write_chart_png(path: Path) -> Path:
    """A plain bar chart drawn with Pillow (no plotting library needed)."""
    image = Image.new("RGB", (480, 360), "white")
    draw = ImageDraw.Draw(image)
    draw.line((40, 320, 460, 320), fill="black")
    draw.line((40, 20, 40, 320), fill="black")
    for index, value in enumerate([120, 200, 80, 260]):
        left = 70 + index * 95
        draw.rectangle((left, 320 - value, left + 60, 320), fill=(40, 90, 200))
        draw.text((left + 15, 330), "Q" + str(index + 1), fill="black")
    image.save(path)
    return path
