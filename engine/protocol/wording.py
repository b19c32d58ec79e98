"""Small helpers for the sentences both processes show people."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str = "") -> str:
    """'1 page', '3 pages', '0 pages'; ``plural`` where adding an s is wrong."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
