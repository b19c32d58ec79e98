"""Image thumbnails for attachments: decoded at thumbnail size, cached, clickable."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QImageReader, QMouseEvent, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

_cache: dict[tuple[str, int], QPixmap] = {}


def thumbnail(path: Path, size: int) -> QPixmap:
    """A pixmap that fits in ``size``×``size``, keeping the aspect ratio; empty if unreadable."""
    key = (str(path), size)
    if key not in _cache:
        reader = QImageReader(str(path))
        reader.setAutoTransform(True)  # honour EXIF orientation, as the engine does
        original = reader.size()
        if original.isValid():
            reader.setScaledSize(
                original.scaled(QSize(size, size), Qt.AspectRatioMode.KeepAspectRatio)
            )
        image = reader.read()
        _cache[key] = QPixmap.fromImage(image) if not image.isNull() else QPixmap()
        if len(_cache) > 512:
            _cache.pop(next(iter(_cache)))
    return _cache[key]


class Thumbnail(QLabel):
    """An attachment's picture; a click opens the file in the system viewer."""

    def __init__(
        self, path: Path, size: int, name: str = "", parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.path = Path(path)
        self.setObjectName("thumbnail")
        pixmap = thumbnail(self.path, size)
        if pixmap.isNull():
            self.setText(name or self.path.name)
        else:
            self.setPixmap(pixmap)
        self.setToolTip(name or self.path.name)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path)))
        super().mouseReleaseEvent(event)


class AttachmentChip(QWidget):
    """A draft attachment in the composer: its thumbnail and a button that removes it."""

    remove_clicked = Signal()

    def __init__(self, path: Path, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("attachmentChip")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.setSpacing(0)
        self.thumbnail = Thumbnail(path, 64, name)
        top.addWidget(self.thumbnail)
        remove = QToolButton()
        remove.setObjectName("chipRemove")
        remove.setText("×")
        remove.setToolTip(f"Remove {name}")
        remove.clicked.connect(self.remove_clicked)
        top.addWidget(remove, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(top)
        caption = QLabel(_elide(name, 14))
        caption.setObjectName("chipCaption")
        layout.addWidget(caption)


def _elide(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
