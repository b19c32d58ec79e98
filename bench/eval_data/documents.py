"""Invoices and till receipts drawn with fpdf2 from known values, in several number and date
formats (1,234.56 · 1.234,56 · 1 234,56 · 1'234.56; ISO, European, US, written-out dates)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

# name: (thousands separator, decimal separator)
NUMBER_FORMATS = {"en": (",", "."), "de": (".", ","), "fr": (" ", ","), "ch": ("'", ".")}
DATE_FORMATS = {
    "iso": "%Y-%m-%d",
    "eu": "%d.%m.%Y",
    "us": "%m/%d/%Y",
    "long": "%B %d, %Y",
    "short": "%d %b %Y",
}
CURRENCIES = ("EUR", "USD", "CHF", "GBP")
SELLERS = (
    ("Acme Tools GmbH", "Hauptstrasse 12, 10115 Berlin", "DE811907980"),
    ("Northwind Supplies Ltd", "4 Harbour Road, Leeds LS1 4AB", "GB123456789"),
    ("Atelier Lumière SARL", "18 rue des Lilas, 69002 Lyon", "FR40303265045"),
    ("Pacific Office Inc.", "900 Market St, San Francisco, CA 94102", None),
)
BUYERS = (
    ("Globex Corporation", "1 Globex Way, Springfield"),
    ("Initech AG", "Bahnhofplatz 3, 8001 Zürich"),
    ("Umbrella Logistics", "77 Dock Street, Rotterdam"),
)
PRODUCTS = (
    "Hex bolt M8", "Washer 8 mm", "Cable tie pack", "Safety gloves", "LED work lamp",
    "Drill bit set", "Masking tape", "Printer paper A4", "Toner cartridge", "Consulting hour",
    "Shipping", "Hinge 40 mm",
)  # fmt: skip
SHOPS = (
    ("Corner Café", "12 Mill Lane, Cambridge"),
    ("FreshMart", "Av. da Liberdade 101, Lisboa"),
    ("Bäckerei Sonne", "Sonnenweg 5, 80331 München"),
)
GROCERIES = ("Espresso", "Croissant", "Sparkling water", "Bagel", "Orange juice", "Muffin",
             "Sandwich", "Green tea")  # fmt: skip


def number(value: float, style: str, decimals: int = 2) -> str:
    thousands, decimal = NUMBER_FORMATS[style]
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\0").replace(".", decimal).replace("\0", thousands)


def _pdf(size: tuple[float, float]) -> Any:
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=size)
    pdf.set_creation_date(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))  # the same bytes each time
    pdf.set_producer("VisionDesk eval")
    pdf.set_auto_page_break(False)
    pdf.add_page()
    return pdf


def make_invoice(rng: random.Random, stem: Path, index: int) -> tuple[Path, dict[str, Any], dict]:
    style = list(NUMBER_FORMATS)[index % len(NUMBER_FORMATS)]
    date_style = list(DATE_FORMATS)[index % len(DATE_FORMATS)]
    currency = rng.choice(CURRENCIES)
    seller, buyer = rng.choice(SELLERS), rng.choice(BUYERS)
    issued = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(360))
    due = issued + dt.timedelta(days=rng.choice((14, 30)))
    items = []
    for product in rng.sample(PRODUCTS, rng.randint(2, 6)):
        quantity = rng.choice((1, 2, 3, 5, 10, 12, 25))
        price = round(rng.uniform(0.4, 900 if "hour" in product else 180), 2)
        items.append({"description": product, "quantity": quantity, "unit_price": price,
                      "amount": round(quantity * price, 2)})  # fmt: skip
    subtotal = round(sum(item["amount"] for item in items), 2)
    rate = rng.choice((0.07, 0.19, 0.2, 0.081))
    tax = round(subtotal * rate, 2)
    total = round(subtotal + tax, 2)
    invoice_number = f"INV-{2024}-{rng.randint(100, 9999):04d}"
    pdf = _pdf((595.0, 842.0))
    pdf.set_font("Helvetica", "B", 20)
    pdf.text(50, 70, "INVOICE")
    pdf.set_font("Helvetica", size=10)
    lines = [seller[0], seller[1]] + ([f"VAT ID {seller[2]}"] if seller[2] else [])
    for row, text in enumerate(lines):
        pdf.text(330, 60 + 14 * row, text)
    pdf.text(50, 120, "Bill to:")
    pdf.text(50, 134, buyer[0])
    pdf.text(50, 148, buyer[1])
    fmt = DATE_FORMATS[date_style]
    for row, (label, value) in enumerate(
        (("Invoice no.", invoice_number), ("Date", issued.strftime(fmt)),
         ("Due", due.strftime(fmt)), ("Currency", currency))
    ):  # fmt: skip
        pdf.text(330, 120 + 14 * row, f"{label}: {value}")
    top = 200
    pdf.set_fill_color(235, 238, 244)
    pdf.rect(45, top - 14, 505, 20, style="F")
    pdf.set_font("Helvetica", "B", 10)
    for x, title in ((50, "Description"), (300, "Qty"), (360, "Unit price"), (470, "Amount")):
        pdf.text(x, top, title)
    pdf.set_font("Helvetica", size=10)
    for row, item in enumerate(items, 1):
        y = top + 22 * row
        pdf.text(50, y, item["description"])
        pdf.text(300, y, str(item["quantity"]))
        pdf.text(360, y, number(item["unit_price"], style))
        pdf.text(470, y, number(item["amount"], style))
    y = top + 22 * (len(items) + 1) + 10
    pdf.line(350, y - 14, 550, y - 14)
    for row, (label, value) in enumerate(
        (("Subtotal", subtotal), (f"VAT {rate * 100:g}%", tax), ("Total", total))
    ):
        if label == "Total":
            pdf.set_font("Helvetica", "B", 11)
        pdf.text(360, y + 18 * row, label)
        pdf.text(470, y + 18 * row, f"{number(value, style)} {currency}")
    path = stem.with_suffix(".pdf")
    pdf.output(str(path))
    truth = {
        "invoice_number": invoice_number,
        "invoice_date": issued.isoformat(),
        "due_date": due.isoformat(),
        "seller": {"name": seller[0], "address": seller[1], "tax_id": seller[2]},
        "buyer": {"name": buyer[0], "address": buyer[1], "tax_id": None},
        "currency": currency,
        "line_items": items,
        "subtotal": subtotal,
        "tax": tax,
        "total": total,
    }
    return path, truth, {"number_format": style, "date_format": date_style, "items": len(items)}


def make_receipt(rng: random.Random, stem: Path, index: int) -> tuple[Path, dict[str, Any], dict]:
    style = list(NUMBER_FORMATS)[(index + 1) % len(NUMBER_FORMATS)]
    date_style = list(DATE_FORMATS)[(index + 2) % len(DATE_FORMATS)]
    shop, address = rng.choice(SHOPS)
    currency = rng.choice(CURRENCIES)
    when = dt.datetime(2024, 1, 1, 7) + dt.timedelta(
        days=rng.randrange(360), minutes=rng.randrange(720)
    )
    items = []
    for product in rng.sample(GROCERIES, rng.randint(2, 7)):
        quantity = rng.choice((1, 1, 1, 2, 3))
        items.append({"description": product, "quantity": quantity,
                      "amount": round(quantity * rng.uniform(1.2, 6.5), 2)})  # fmt: skip
    subtotal = round(sum(item["amount"] for item in items), 2)
    tax = round(subtotal * 0.07, 2)
    tip = rng.choice((None, 1.0, 2.5))
    total = round(subtotal + tax + (tip or 0), 2)
    payment = rng.choice(("Card", "Cash", "Contactless"))
    height = 230.0 + 16 * len(items) + (16 if tip else 0)
    pdf = _pdf((226.0, height))  # 80 mm till roll: a long, narrow page
    pdf.set_font("Helvetica", "B", 12)
    pdf.text(20, 30, shop)
    pdf.set_font("Helvetica", size=8)
    pdf.text(20, 44, address)
    pdf.text(20, 58, f"{when.strftime(DATE_FORMATS[date_style])}  {when.strftime('%H:%M')}")
    y = 84.0
    for item in items:
        pdf.text(20, y, f"{item['quantity']} x {item['description']}")
        pdf.text(160, y, number(item["amount"], style))
        y += 16
    pdf.line(20, y - 8, 206, y - 8)
    rows = [("Subtotal", subtotal), ("Tax 7%", tax)] + ([("Tip", tip)] if tip else [])
    for label, value in [*rows, ("TOTAL " + currency, total)]:
        pdf.text(20, y + 6, label)
        pdf.text(160, y + 6, number(float(value), style))
        y += 16
    pdf.text(20, y + 14, f"Paid by {payment}")
    path = stem.with_suffix(".pdf")
    pdf.output(str(path))
    truth = {
        "merchant": shop,
        "merchant_address": address,
        "date": when.date().isoformat(),
        "time": when.strftime("%H:%M"),
        "currency": currency,
        "items": items,
        "subtotal": subtotal,
        "tax": tax,
        "tip": tip,
        "total": total,
        "payment_method": payment,
    }
    return path, truth, {"number_format": style, "date_format": date_style, "items": len(items)}
