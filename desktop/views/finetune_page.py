"""The Fine-tune page: what fine-tuning does, the current run, and the wizard that runs it."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from desktop.state.finetune import EngineLike, FinetuneSession
from desktop.views.finetune_wizard import FinetuneWizard

INTRO = (
    "<h2>Teach a model your own examples</h2>"
    "<p>Give VisionDesk a folder of images with the answers you want — captions, question and "
    "answer pairs, or the fields of your forms — and it trains a small LoRA adapter on this "
    "computer. The base model is not changed; the adapter can be switched on in Chat and "
    "Extract, exported, or merged.</p>"
    "<p>The wizard picks sensible settings and explains each one: which parts are trained, how "
    "long, and whether it fits your GPU, checked with a trial step before the run starts. "
    "You can close it while it trains and come back later.</p>"
)


class FinetunePage(QWidget):
    """Keeps one ``FinetuneSession`` for the window's lifetime, so a run outlives the wizard."""

    def __init__(
        self, engine: EngineLike, models: Callable[[], list[str]], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("finetunePage")
        self.session = FinetuneSession(engine, parent=self)
        self._models = models
        self.wizard: FinetuneWizard | None = None
        layout = QVBoxLayout(self)
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(intro)
        self.state_label = QLabel()
        self.state_label.setObjectName("finetuneState")
        layout.addWidget(self.state_label)
        self.open_button = QPushButton("Open the fine-tuning wizard…")
        self.open_button.setObjectName("primaryButton")
        self.open_button.clicked.connect(self.open_wizard)
        layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addStretch(1)
        self.session.changed.connect(self._on_session_changed)
        self._on_session_changed()

    @Slot()
    def open_wizard(self) -> FinetuneWizard:
        """Show the wizard; reopened while a run trains, it starts on the training page."""
        if self.wizard is None or not self.wizard.isVisible():
            self.wizard = FinetuneWizard(self.session, self._models(), parent=self.window())
            self.wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self.wizard.show()
        self.wizard.raise_()
        return self.wizard

    @Slot()
    def _on_session_changed(self) -> None:
        state = self.session.state or "idle"
        training = state in ("training", "stopping")
        self.state_label.setText(
            f"A run is {state}. Open the wizard to follow it." if training else ""
        )
        self.open_button.setText(
            "Show the training run…" if training else "Open the fine-tuning wizard…"
        )
