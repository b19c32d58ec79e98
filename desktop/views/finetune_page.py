"""The Fine-tune page: what fine-tuning does, the current run, earlier runs, and the wizard."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop.paths import data_dir
from desktop.state.finetune import EngineLike, FinetuneSession
from desktop.views.finetune_common import clear_layout, hint, html_label
from desktop.views.finetune_wizard import FinetuneWizard
from engine.protocol import finetune as pf

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
RUN_STATES = {
    "running": "still training",
    "paused": "paused",
    "stopped": "stopped and saved",
    "interrupted": "interrupted",
    "done": "finished",
    "failed": "failed",
}


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
        self.runs_box = QWidget()
        self.runs_box.setObjectName("earlierRuns")
        runs_layout = QVBoxLayout(self.runs_box)
        runs_layout.setContentsMargins(0, 12, 0, 0)
        runs_layout.addWidget(QLabel("<b>Earlier runs</b>"))
        runs_layout.addWidget(
            hint("Open one to resume it, compare it with the base model, or use its adapter.")
        )
        self.runs_grid = QGridLayout()
        self.runs_grid.setColumnStretch(0, 1)
        runs_layout.addLayout(self.runs_grid)
        self.runs_box.setVisible(False)
        layout.addWidget(self.runs_box)
        layout.addStretch(1)
        self._shown_runs: tuple[list[pf.RunInfo], str] | None = None
        self.session.changed.connect(self._on_session_changed)
        self._on_session_changed()
        # Runs outlive the app: a paused or crashed run of an earlier session is offered again.
        self.session.list_runs(str(data_dir() / "finetune"))

    @Slot()
    def open_wizard(self) -> FinetuneWizard:
        """Show the wizard; reopened while a run trains, it starts on the training page."""
        if self.wizard is None:
            self.wizard = FinetuneWizard(self.session, self._models(), parent=self.window())
            self.wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
            # Closed, it is deleted: forget it then, so the next click makes a new one.
            self.wizard.finished.connect(self._on_wizard_finished)
        self.wizard.show()
        self.wizard.raise_()
        return self.wizard

    def open_run(self, info: pf.RunInfo) -> FinetuneWizard:
        """Open an earlier run in a new wizard, on its training page."""
        if self.wizard is not None:
            self.wizard.close()  # its pages show another run
        self.session.open_run(info)
        return self.open_wizard()

    @Slot()
    def _on_wizard_finished(self) -> None:
        self.wizard = None

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
        shown = (self.session.runs, self.session.run_dir)
        if shown != self._shown_runs:
            self._shown_runs = shown
            self._show_runs(self.session.runs, self.session.run_dir)
        self.runs_box.setEnabled(not self.session.busy)  # one run at a time

    def _show_runs(self, runs: list[pf.RunInfo], current: str) -> None:
        """The runs in the runs folder, but the one the wizard shows."""
        clear_layout(self.runs_grid)
        here = Path(current).expanduser().resolve() if current else None
        runs = [run for run in runs if Path(run.run_dir) != here]
        for line, run in enumerate(runs):
            state = RUN_STATES.get(run.state, run.state)
            text = html_label("earlierRun")
            text.setText(
                f"<b>{escape(Path(run.run_dir).name)}</b> · {escape(Path(run.model).name)} · "
                f"{state} at step {run.step} of {run.total_steps}"
            )
            text.setToolTip(run.run_dir)
            self.runs_grid.addWidget(text, line, 0)
            if run.state != "running":  # a trainer of its own still writes to that folder
                button = QPushButton("Open…")
                button.setObjectName("openRun")
                button.clicked.connect(lambda _=False, r=run: self.open_run(r))
                self.runs_grid.addWidget(button, line, 1)
        self.runs_box.setVisible(bool(runs))
