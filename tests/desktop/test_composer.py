"""The composer: a placeholder that never wraps, and controls a screen reader can name."""

from __future__ import annotations

from PySide6.QtGui import QAccessible

from desktop.views.composer import Composer


def test_the_placeholder_keeps_to_one_line_at_any_width(qtbot) -> None:
    composer = Composer()
    qtbot.addWidget(composer)
    composer.show()
    edit = composer.edit
    shown = {}
    for width in (1200, 420, 230):
        composer.resize(width, composer.height())
        qtbot.waitUntil(lambda width=width: composer.width() == width)
        room = edit.viewport().width() - 2 * int(edit.document().documentMargin())
        assert edit.fontMetrics().horizontalAdvance(edit.placeholderText()) <= room
        shown[width] = edit.placeholderText()
    assert "Shift+Enter" in shown[1200]  # the key hints, where there is room for them
    assert shown[420] == "Ask about an image…"
    assert shown[230].startswith("Ask") and shown[230].endswith("…")
    assert "Shift+Enter" in edit.toolTip()  # and always here


def test_the_attach_button_is_named_for_screen_readers(qtbot) -> None:
    composer = Composer()
    qtbot.addWidget(composer)
    button = composer.attach_button
    name = QAccessible.queryAccessibleInterface(button).text(QAccessible.Text.Name)
    assert button.text() == "+" and name == "Attach images"
    assert button.toolTip().startswith(name)
