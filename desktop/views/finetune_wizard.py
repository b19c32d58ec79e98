"""The fine-tuning wizard: base model → data → recipe → plan → train → evaluate → use.

The set-up pages are in ``finetune_setup_pages``, shared pieces in ``finetune_common``; the
session (``desktop.state.finetune``) holds the state, so it outlives the wizard.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QWidget,
    QWizard,
)

from desktop.paths import data_dir
from desktop.state.finetune import FinetuneSession
from desktop.views.finetune_common import (
    GIB,
    Page,
    clear_layout,
    folder_row,
    hint,
    html_label,
)
from desktop.views.finetune_setup_pages import DataPage, ModelPage, PlanPage, RecipePage
from desktop.views.plot import LossPlot
from desktop.views.thumbnails import thumbnail
from engine.protocol import finetune as pf


class TrainPage(Page):
    def __init__(self, session: FinetuneSession) -> None:
        super().__init__(
            session,
            "Training",
            "Training runs in the background: you can close this window and come back. "
            "Pause frees the GPU; Resume continues from the same step.",
        )
        self.out = QLineEdit(session.run_dir)
        self.out.setPlaceholderText("Folder for this run")
        self.layout_.addLayout(folder_row(self.out, "Folder for this run", self))
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.stop_button = QPushButton("Stop and save")
        self.new_button = QPushButton("New run…")
        self.new_button.setObjectName("newRunButton")
        self.new_button.setToolTip("Keep this run in its folder and set up another one.")
        for button, slot in (
            (self.start_button, self._start),
            (self.pause_button, session.pause),
            (self.resume_button, session.resume),
            (self.stop_button, session.stop),
            (self.new_button, self._new_run),
        ):
            button.clicked.connect(slot)
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.layout_.addLayout(buttons)
        self.status = html_label("trainStatus")
        self.layout_.addWidget(self.status)
        self.progress = QProgressBar()
        self.layout_.addWidget(self.progress)
        self.plot = LossPlot()
        self.layout_.addWidget(self.plot, 1)
        self.layout_.addWidget(
            hint(
                "Lower is better. The blue line is the error on the examples being learned; the orange "
                "points check the examples set aside (or, with few examples, the learned ones)."
            )
        )
        self.values: dict[str, QLabel] = {}
        grid = QGridLayout()
        names = [
            "Pass over the data",
            "Training loss",
            "Evaluation loss",
            "Learning rate",
            "Examples per second",
            "Tokens per second",
            "Peak memory",
            "Waiting for data",
        ]
        for index, name in enumerate(names):
            grid.addWidget(hint(name), index // 4 * 2, index % 4)
            value = QLabel("–")
            value.setObjectName("metric")
            value.setStyleSheet("font-size: 15px; font-weight: 600;")
            self.values[name] = value
            grid.addWidget(value, index // 4 * 2 + 1, index % 4)
        self.layout_.addLayout(grid)
        self.notices = hint("")
        self.notices.setTextFormat(Qt.TextFormat.RichText)
        self.layout_.addWidget(self.notices)
        session.metrics_added.connect(self._on_metrics)
        session.eval_added.connect(self._on_eval)

    def initializePage(self) -> None:
        # A new run needs a new folder: the one shown may belong to the run just left.
        if self.session.run is None and not self.session.busy and _in_use(self.out.text()):
            self.out.clear()
        if not self.out.text():
            name = Path(self.session.model).name or "model"
            self.out.setText(
                str(data_dir() / "finetune" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
            )
        self._replay()
        self.refresh()

    def _start(self) -> None:
        self.plot.clear()
        self.session.start(self.out.text().strip())

    def _new_run(self) -> None:
        """Leave this run and go back to the first page, where model, data and recipe can change."""
        self.session.new_run()
        self.out.clear()
        wizard = self.wizard()
        wizard.setStartId(FinetuneWizard.MODEL)
        wizard.restart()

    def _replay(self) -> None:
        self.plot.clear()
        for metrics in self.session.metrics:
            self._on_metrics(metrics)
        for point in self.session.evals:
            self._on_eval(point)

    @Slot(object)
    def _on_metrics(self, m: pf.TrainMetrics) -> None:
        self.plot.set_x_max(m.total_steps)
        self.plot.add("train", m.step, m.loss)
        self.progress.setRange(0, max(1, m.total_steps))
        self.progress.setValue(m.step)
        self.values["Pass over the data"].setText(f"{m.epoch:.2f}")
        self.values["Training loss"].setText(f"{m.loss:.3f}")
        self.values["Learning rate"].setText(f"{m.learning_rate:.6f}".rstrip("0").rstrip("."))
        self.values["Examples per second"].setText(f"{m.samples_per_s:.1f}")
        self.values["Tokens per second"].setText(f"{m.tokens_per_s:.0f}")
        self.values["Peak memory"].setText(f"{m.peak_memory_bytes / GIB:.2f} GB")
        self.values["Waiting for data"].setText(f"{m.data_wait_fraction:.0%}")

    @Slot(object)
    def _on_eval(self, point: pf.EvalPoint) -> None:
        self.plot.add("eval", point.step, point.eval_loss)
        where = "" if point.on == "held_out" else " (training rows)"
        self.values["Evaluation loss"].setText(f"{point.eval_loss:.3f}{where}")

    @Slot()
    def refresh(self) -> None:
        session = self.session
        state = session.state
        run = session.run
        running = state in ("training", "stopping")
        self.start_button.setEnabled(not running and run is None)
        self.pause_button.setEnabled(state == "training")
        self.stop_button.setEnabled(state == "training")
        self.resume_button.setEnabled(session.resumable)
        self.new_button.setVisible(run is not None)
        self.new_button.setEnabled(not running)
        self.out.setReadOnly(run is not None or running)
        if run is not None and not running:  # the step the run folder says, not the last event
            self.progress.setRange(0, max(1, run.total_steps))
            self.progress.setValue(run.step)
        text = escape(session.message)
        if session.metrics and state == "training":
            m = session.metrics[-1]
            text = (
                f"<b>Step {m.step} of {m.total_steps}</b>{_eta(m.eta_s)} · "
                f"pass {m.epoch:.1f} over your examples"
            )
        elif state == "done" and session.run is not None:
            best = session.run.best_eval_loss
            text = (
                f"<b>Finished</b> after {session.run.step} steps"
                + (f"; best evaluation loss {best:.3f}" if best is not None else "")
                + "."
            )
        if session.error:
            text = f"<span style='color:#b91c1c'>{escape(session.error)}</span>"
            if session.resumable:
                text += " The last checkpoint is kept: Resume continues from it."
        self.status.setText(text)
        self.notices.setText("<br>".join(escape(n) for n in session.notices[-3:]))
        super().refresh()

    def isComplete(self) -> bool:
        run = self.session.run
        return self.session.state in ("done", "stopped", "paused") and bool(run and run.adapter_dir)


def _in_use(folder: str) -> bool:
    path = Path(folder).expanduser()
    return bool(folder) and path.is_dir() and any(path.iterdir())


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 90:
        return f" · about {seconds / 60:.0f} min left"
    return f" · {seconds:.0f} s left"


class EvaluatePage(Page):
    def __init__(self, session: FinetuneSession) -> None:
        super().__init__(
            session,
            "Before and after",
            "The base model and your adapter answer the same held-out pictures.",
        )
        self.compare = QPushButton("Compare again")
        self.compare.clicked.connect(lambda: session.evaluate())
        self.layout_.addWidget(self.compare, 0, Qt.AlignmentFlag.AlignLeft)
        self.summary = html_label("evaluationSummary")
        self.layout_.addWidget(self.summary)
        self.cards = QWidget()
        self.cards_layout = QGridLayout(self.cards)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.cards)
        self.layout_.addWidget(scroll, 1)
        self._shown: pf.Evaluation | None = None

    def initializePage(self) -> None:
        if self.session.evaluation is None:
            self.session.evaluate()
        self.refresh()

    @Slot()
    def refresh(self) -> None:
        evaluation = self.session.evaluation
        if evaluation is None:
            self.summary.setText(escape(self.session.error or self.session.message))
        elif evaluation is not self._shown:
            self._shown = evaluation
            self._show(evaluation)
        super().refresh()

    def _show(self, e: pf.Evaluation) -> None:
        where = (
            "held-out pictures" if e.on == "held_out" else "training pictures (none were held out)"
        )
        lines = [
            f"On {e.rows} {where}: loss <b>{e.base_loss:.3f}</b> with the base model, "
            f"<b>{e.adapter_loss:.3f}</b> with your adapter (lower is better)."
        ]
        for name, value in e.metrics.get("adapter", {}).items():
            base = e.metrics.get("base", {}).get(name, 0.0)
            lines.append(f"{name.replace('_', ' ')}: {base:.2f} → <b>{value:.2f}</b>")
        self.summary.setText("<br>".join(lines))
        clear_layout(self.cards_layout)
        for column, title in enumerate(("Picture", "Expected", "Base model", "With your adapter")):
            self.cards_layout.addWidget(QLabel(f"<b>{title}</b>"), 0, column)
        for row, probe in enumerate(e.probes, start=1):
            picture = QLabel()
            if probe.images:
                picture.setPixmap(thumbnail(Path(probe.images[0]), 72))
            self.cards_layout.addWidget(picture, row, 0)
            for column, text in enumerate((probe.reference, probe.base, probe.adapter), start=1):
                label = html_label()
                label.setText(escape(text) or "<i>(nothing)</i>")
                self.cards_layout.addWidget(label, row, column)


class UsePage(Page):
    def __init__(self, session: FinetuneSession) -> None:
        super().__init__(
            session, "Use your adapter", "Chat with it, keep a copy, or merge it into a full model."
        )
        self.use_button = QPushButton("Use in chat and extraction")
        self.use_button.clicked.connect(session.use_adapter)
        self.layout_.addWidget(self.use_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.layout_.addWidget(
            hint(
                "The base model is loaded as usual and the adapter is applied "
                "on top of it (also over a 4-bit base)."
            )
        )
        self.search_button = QPushButton("Rebuild the search index with the tuned model")
        self.search_button.clicked.connect(session.use_for_search)
        self.layout_.addWidget(self.search_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.destination = QLineEdit()
        self.destination.setPlaceholderText("Destination folder (a full path)")
        self.destination.textChanged.connect(self._on_destination_changed)
        self.layout_.addLayout(folder_row(self.destination, "Destination folder", self))
        row = QHBoxLayout()
        self.export_button = QPushButton("Export the adapter folder")
        self.export_button.clicked.connect(lambda: session.export(self._destination()))
        self.merge_button = QPushButton("Merge into a full model")
        self.merge_button.clicked.connect(lambda: session.merge(self._destination()))
        row.addWidget(self.export_button)
        row.addWidget(self.merge_button)
        row.addStretch(1)
        self.layout_.addLayout(row)
        self.layout_.addWidget(
            hint(
                "Merging writes a bf16 copy of the base with the adapter built in "
                "(never into a 4-bit model) and checks that it answers exactly "
                "like the adapter. Exporting copies the small adapter folder."
            )
        )
        self.outcome = html_label("useOutcome")
        self.layout_.addWidget(self.outcome)
        self.layout_.addStretch(1)
        self._on_destination_changed()

    def _destination(self) -> str:
        """The folder typed, as a full path; "" while there is none. The engine would read a
        relative name (or none) against its own working folder, which nobody chose."""
        text = self.destination.text().strip()
        path = Path(text).expanduser()
        return str(path) if text and path.is_absolute() else ""

    @Slot()
    def _on_destination_changed(self) -> None:
        chosen = bool(self._destination())
        self.export_button.setEnabled(chosen)
        self.merge_button.setEnabled(chosen)

    @Slot()
    def refresh(self) -> None:
        run = self.session.run
        self.search_button.setVisible(bool(run and run.merged_dir))
        self.use_button.setVisible(not (run and run.merged_dir))
        self.outcome.setText(escape(self.session.outcome))
        super().refresh()


# =================================================================================================
# The wizard
# =================================================================================================


class FinetuneWizard(QWizard):
    MODEL, DATA, RECIPE, PLAN, TRAIN, EVALUATE, USE = range(7)

    def __init__(
        self,
        session: FinetuneSession,
        models: list[str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.setObjectName("finetuneWizard")
        self.setWindowTitle("Teach a model your examples")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, False)
        self.setButtonText(QWizard.WizardButton.CancelButton, "Close")
        self.setButtonText(QWizard.WizardButton.FinishButton, "Done")
        recipes = {name: RECIPE_TEXT[name] for name in ("language", "projector", "vision_language")}
        self.pages: dict[int, Page] = {
            self.MODEL: ModelPage(session, models or []),
            self.DATA: DataPage(session),
            self.RECIPE: RecipePage(session, recipes),
            self.PLAN: PlanPage(session),
            self.TRAIN: TrainPage(session),
            self.EVALUATE: EvaluatePage(session),
            self.USE: UsePage(session),
        }
        for page_id, page in self.pages.items():
            self.setPage(page_id, page)
        if session.run is not None or session.state in ("training", "stopping"):
            self.setStartId(self.TRAIN)  # reopened while (or after) a run trains
        self.resize(920, 720)

    def page_widget(self, page_id: int) -> Page:
        return self.pages[page_id]


# The recipes as the wizard words them (the engine's plan repeats the chosen one).
RECIPE_TEXT: dict[str, tuple[str, str]] = {
    "language": (
        "Language + projector (recommended)",
        "Teaches the model your answers, names and formats; the picture encoder stays as it "
        "is. Right for most data.",
    ),
    "projector": (
        "Projector only",
        "Only re-aligns how pictures are handed to the language model; its wording stays "
        "the same. For a new kind of picture with simple captions.",
    ),
    "vision_language": (
        "Vision + language",
        "Also adapts the picture encoder, gently. Only for pictures unlike anything "
        "the model has seen (microscopy, radar, unusual scans).",
    ),
}
