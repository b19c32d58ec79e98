"""The left rail that switches between the window's pages: Chat, Extract, Search, Models…"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QButtonGroup, QLabel, QToolButton, QVBoxLayout, QWidget


class NavigationRail(QWidget):
    """One checkable button per page; ``page_selected(key)`` when the user picks one."""

    page_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("navigationRail")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setFixedWidth(108)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(8, 12, 8, 12)
        self._layout.setSpacing(6)
        brand = QLabel("VD")
        brand.setObjectName("navigationBrand")
        brand.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._layout.addWidget(brand)
        self._layout.addSpacing(8)
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self._buttons: dict[str, QToolButton] = {}
        self._layout.addStretch(1)

    def add_page(self, key: str, title: str, tooltip: str = "") -> QToolButton:
        button = QToolButton()
        button.setObjectName(f"nav_{key}")
        button.setProperty("navButton", True)
        button.setText(title)
        button.setToolTip(tooltip or title)
        button.setCheckable(True)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.setSizePolicy(
            button.sizePolicy().horizontalPolicy(), button.sizePolicy().verticalPolicy()
        )
        button.setMinimumHeight(40)
        button.setMinimumWidth(92)
        button.clicked.connect(lambda _checked=False, k=key: self.page_selected.emit(k))
        self._group.addButton(button)
        self._buttons[key] = button
        self._layout.insertWidget(self._layout.count() - 1, button)
        return button

    @Slot(str)
    def set_current(self, key: str) -> None:
        if key in self._buttons:
            self._buttons[key].setChecked(True)

    def keys(self) -> list[str]:
        return list(self._buttons)
