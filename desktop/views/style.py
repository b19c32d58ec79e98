"""Dynamic QSS properties: set one and re-apply the theme to the widget and its children."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget


def set_style_property(widget: QWidget, name: str, value: object) -> None:
    """Qt does not re-evaluate ``[name="value"]`` selectors by itself, for the widget or for the
    descendants that a selector like ``QFrame[kind="x"] QLabel`` targets."""
    if widget.property(name) == value:
        return
    widget.setProperty(name, value)
    for target in (widget, *widget.findChildren(QWidget)):
        style = target.style()
        style.unpolish(target)
        style.polish(target)
