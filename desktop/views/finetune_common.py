"""What the fine-tuning wizard's pages share: the page base class, labels and small helpers."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
    QWizardPage,
)

from desktop.state.finetune import FinetuneSession

GIB = 1024**3
GRID_LIMIT = 300  # thumbnails shown; a large dataset is summarised, not decoded in full
VERDICT = {
    "fits": ("#15803d", "fits"),
    "tight": ("#b45309", "is tight"),
    "does_not_fit": ("#b91c1c", "does not fit"),
    "unknown": ("#6b7280", "cannot be checked"),
}
ISSUE_TITLES = {
    "missing_image": "Images that do not exist",
    "unreadable_image": "Damaged or unreadable images",
    "empty_text": "Rows without an answer",
    "duplicate": "Repeated rows",
    "exif_rotated": "Photos stored sideways",
    "colour_mode": "Unusual colour formats",
    "too_small": "Very small images",
    "too_large": "Very large images",
    "extreme_aspect": "Very long, thin images",
    "parse_error": "Rows that could not be read",
}
FIX_VERBS = {
    "missing_image": "Leave out",
    "unreadable_image": "Leave out",
    "empty_text": "Leave out",
    "duplicate": "Keep one",
    "exif_rotated": "Turn upright",
    "colour_mode": "Convert to RGB",
    "too_small": "Enlarge",
    "too_large": "Shrink",
    "extreme_aspect": "Pad",
}
FIXED_WORDS = {
    "missing_image": "rows with missing pictures left out",
    "unreadable_image": "damaged pictures left out",
    "empty_text": "rows without an answer left out",
    "duplicate": "repeated rows left out",
    "exif_rotated": "sideways photos turned upright",
    "colour_mode": "pictures converted to RGB",
    "too_small": "tiny pictures enlarged",
    "too_large": "huge pictures scaled down",
    "extreme_aspect": "long strips padded",
}
SETTING_LABELS = {
    "recipe": "What is trained",
    "quant": "Base precision",
    "dtype": "Compute type",
    "rank": "LoRA rank",
    "alpha": "LoRA alpha",
    "dropout": "Dropout",
    "learning_rate": "Learning rate",
    "vision_learning_rate": "Image-encoder rate",
    "batch_size": "Examples per step",
    "grad_accum": "Steps accumulated",
    "epochs": "Passes over the data",
    "total_steps": "Training steps",
    "warmup_ratio": "Warm-up",
    "weight_decay": "Weight decay",
    "max_grad_norm": "Gradient clipping",
    "optimizer": "Optimiser",
    "gradient_checkpointing": "Gradient checkpointing",
    "eval_every": "Evaluate every",
    "checkpoint_every": "Save every",
    "early_stopping_patience": "Early stopping",
    "max_length": "Longest example",
    "image_max_pixels": "Image budget",
}


class Page(QWizardPage):
    def __init__(self, session: FinetuneSession, title: str, subtitle: str) -> None:
        super().__init__()
        self.session = session
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self.layout_ = QVBoxLayout(self)
        # Connected to a slot no subclass overrides: PySide drops that connection when the page
        # is deleted with its wizard, but not one to an overridden slot such as ``refresh``.
        session.changed.connect(self._on_session_changed)

    def initializePage(self) -> None:
        self.refresh()

    @Slot()
    def _on_session_changed(self) -> None:
        self.refresh()

    @Slot()
    def refresh(self) -> None:
        self.completeChanged.emit()


def html_label(object_name: str = "") -> QLabel:
    """A word-wrapped label that always renders its text as HTML: callers escape what they put
    in. (Left to guess, Qt shows a line without tags as typed, so "Baker &amp; Sons" would
    appear with its entity.)"""
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setWordWrap(True)
    if object_name:
        label.setObjectName(object_name)
    return label


def hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setObjectName("wizardHint")
    label.setStyleSheet("color: #4b5563;")
    return label


def folder_row(edit: QLineEdit, caption: str, parent: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    browse = QPushButton("Browse…")

    def choose() -> None:
        folder = QFileDialog.getExistingDirectory(parent, caption, edit.text())
        if folder:
            edit.setText(folder)
            edit.editingFinished.emit()

    browse.clicked.connect(choose)
    row.addWidget(browse)
    return row


def clear_layout(layout: QGridLayout) -> None:
    while layout.count():
        item = layout.takeAt(0)
        widget = item.widget() if item is not None else None
        if widget is not None:
            widget.deleteLater()


def elide(text: str, length: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"
