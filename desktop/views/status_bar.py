"""The window's status bar: engine state (with a coloured dot), device, loaded model, VRAM."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QPushButton, QStatusBar, QWidget

from desktop.state.engine_status import EngineStatusModel
from desktop.views.style import set_style_property


class EngineStatusBar(QStatusBar):
    restart_requested = Signal()
    unload_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("engineStatusBar")
        self.setSizeGripEnabled(False)
        self.dot = QLabel("●")
        self.dot.setObjectName("statusDot")
        self.state = QLabel("Starting engine…")
        self.state.setObjectName("engineState")
        self.restart_button = QPushButton("Restart engine")
        self.restart_button.setObjectName("linkButton")
        self.restart_button.clicked.connect(self.restart_requested)
        self.restart_button.hide()
        self.device = QLabel()
        self.model = QLabel()
        self.vram = QLabel()
        for label in (self.device, self.model, self.vram):
            label.setObjectName("statusField")
        self.unload_button = QPushButton("Unload")
        self.unload_button.setObjectName("linkButton")
        self.unload_button.setToolTip(
            "Free the memory the model holds; it loads again with the next question"
        )
        self.unload_button.clicked.connect(self.unload_requested)
        self.unload_button.hide()
        self.addWidget(self.dot)
        self.addWidget(self.state)
        self.addWidget(self.restart_button)
        for widget in (self.device, self.model, self.unload_button, self.vram):
            self.addPermanentWidget(widget)

    def show_status(self, status: EngineStatusModel) -> None:
        self.state.setText(status.state_text())
        self.state.setToolTip(status.problem)
        set_style_property(self.dot, "level", status.state_level())
        self.restart_button.setVisible(status.phase == "failed")
        for label, text in (
            (self.device, status.device_text()),
            (self.model, status.model_text() if status.phase == "ready" else ""),
            (self.vram, status.vram_text()),
        ):
            label.setText(text)
            label.setVisible(bool(text))
        idle = status.phase == "ready" and status.engine_state == "idle"
        self.unload_button.setVisible(idle and status.loaded is not None)
