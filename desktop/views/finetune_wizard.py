"""The fine-tuning wizard: base model → data → recipe → plan → train → evaluate → use.

``FinetuneSession`` holds the state and talks to the engine (anything with ``send`` and an
``event_received`` signal); the wizard's pages only show it. The session outlives the wizard, so
the window can close the wizard while a run trains and open a new one on the same session later:
it opens on the training page with the curve so far. Self-contained: the main window decides what
``use_adapter_requested`` (chat with the adapter) and ``search_model_requested`` mean.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Slot
from PySide6.QtGui import QColor, QIcon
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from desktop.paths import data_dir
from desktop.state.finetune import AUTO_FIXES, FinetuneSession
from desktop.views.plot import LossPlot
from desktop.views.thumbnails import thumbnail
from engine.protocol import finetune as pf

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
        session.changed.connect(self.refresh)

    def initializePage(self) -> None:
        self.refresh()

    @Slot()
    def refresh(self) -> None:
        self.completeChanged.emit()


def _hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setObjectName("wizardHint")
    label.setStyleSheet("color: #4b5563;")
    return label


def _folder_row(edit: QLineEdit, caption: str, parent: QWidget) -> QHBoxLayout:
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


class ModelPage(Page):
    def __init__(self, session: FinetuneSession, models: list[str]) -> None:
        super().__init__(session, "Base model", "Pick the model you want to teach.")
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.addItems(models)
        self.combo.setCurrentText(session.model or (models[0] if models else ""))
        self.combo.currentTextChanged.connect(self._changed)
        row = QHBoxLayout()
        row.addWidget(self.combo, 1)
        browse = QPushButton("Model folder…")
        browse.clicked.connect(self._browse)
        row.addWidget(browse)
        self.layout_.addLayout(row)
        self.layout_.addWidget(
            _hint(
                "Your pictures and answers teach the model in a small add-on (an adapter); the model "
                "itself is not changed. Chat models (LLaVA, Qwen2-VL, …) learn to answer your way; "
                "image-search models (CLIP, SigLIP) learn to find your pictures by your words. "
                "A 7-billion-parameter model needs a GPU with about 12 GB; smaller ones train faster."
            )
        )
        self.layout_.addStretch(1)
        self._changed(self.combo.currentText())

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.combo.setCurrentText(folder)

    def _changed(self, text: str) -> None:
        self.session.model = text.strip()
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return bool(self.session.model)


class DataPage(Page):
    def __init__(self, session: FinetuneSession) -> None:
        super().__init__(
            session,
            "Your examples",
            "A folder of pictures with their texts: a .txt file next to each picture, "
            "or a metadata.jsonl or CSV file listing pictures and answers.",
        )
        self.folder = QLineEdit(session.data)
        self.folder.setPlaceholderText("Folder with your pictures")
        self.folder.editingFinished.connect(self._folder_chosen)
        self.layout_.addLayout(_folder_row(self.folder, "Folder with your pictures", self))
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setObjectName("dataSummary")
        self.layout_.addWidget(self.summary)
        self.issues = QWidget()
        self.issues_grid = QGridLayout(self.issues)
        self.issues_grid.setContentsMargins(0, 0, 0, 0)
        self.issues_grid.setColumnStretch(0, 1)  # the sentence takes the room, buttons stay small
        self.layout_.addWidget(self.issues)
        self.grid = QListWidget()
        self.grid.setObjectName("exampleGrid")
        self.grid.setViewMode(QListWidget.ViewMode.IconMode)
        self.grid.setIconSize(QSize(96, 96))
        self.grid.setGridSize(QSize(150, 168))
        self.grid.setWordWrap(True)
        self.grid.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.grid.setMovement(QListWidget.Movement.Static)
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.layout_.addWidget(self.grid, 1)
        self._shown: pf.DatasetReport | None = None

    def _folder_chosen(self) -> None:
        folder = self.folder.text().strip()
        if folder and folder != self.session.data or self.session.report is None:
            self.session.data = folder
            if folder:
                self.session.inspect(fixes=AUTO_FIXES)

    def fix(self, kinds: list[str]) -> None:
        self.session.inspect(fixes=sorted(set(self.session.settings.fixes) | set(kinds)))

    @Slot()
    def refresh(self) -> None:
        session = self.session
        report = session.report
        if session.state == "checking":
            self.summary.setText(session.message)
        elif session.error and report is None:
            self.summary.setText(f"<span style='color:#b91c1c'>{escape(session.error)}</span>")
        if report is not None and report is not self._shown:
            self._shown = report
            self._show_report(report)
        super().refresh()

    def _show_report(self, report: pf.DatasetReport) -> None:
        kind = {
            "caption": "pictures with captions",
            "qa": "pictures with questions and answers",
            "messages": "conversations",
            "mixed": "examples",
        }.get(report.kind, "examples")
        fixed = (
            f" Already fixed: {', '.join(FIXED_WORDS.get(k, k) for k in report.fixes_applied)}."
            if (report.fixes_applied)
            else ""
        )
        if report.eval_rows:
            split = (
                f"{report.train_rows} are used for learning and {report.eval_rows} are set aside "
                "to check the result on pictures the model has not learned from."
            )
        else:
            split = (
                f"All {report.train_rows} are used for learning. With fewer than 32 examples none "
                "can be set aside, so the final check shows how well they were learned."
            )
        self.summary.setText(f"<b>{len(report.rows)} {kind}.</b> {split}{escape(fixed)}")
        self._show_issues(report)
        self.grid.clear()
        problems = {issue.row: issue for issue in report.issues if issue.row is not None}
        for row in report.rows[:GRID_LIMIT]:
            label = _elide(row.answer or "(no answer)", 70)
            if row.split == "eval":
                label += "\n· set aside for checking"
            problem = problems.get(row.index)
            if problem is not None:
                label = f"⚠ {label}"
            item = QListWidgetItem(label)
            if row.images:
                item.setIcon(QIcon(thumbnail(Path(row.images[0]), 96)))
            item.setToolTip(
                f"{row.source}\nQuestion: {row.prompt}\nAnswer: {row.answer}"
                + (f"\n\n{problem.message}" if problem is not None else "")
            )
            if problem is not None:
                item.setForeground(QColor("#b91c1c" if problem.blocking else "#b45309"))
            elif row.split == "eval":
                item.setForeground(QColor("#1d4ed8"))
            self.grid.addItem(item)
        if len(report.rows) > GRID_LIMIT:
            self.grid.addItem(QListWidgetItem(f"… and {len(report.rows) - GRID_LIMIT} more"))

    def _show_issues(self, report: pf.DatasetReport) -> None:
        _clear(self.issues_grid)
        groups: dict[str, list[pf.DatasetIssue]] = {}
        for issue in report.issues:
            groups.setdefault(issue.kind, []).append(issue)
        fixable = [kind for kind in groups if kind in FIX_VERBS]
        for line, (kind, issues) in enumerate(groups.items()):
            colour = "#b91c1c" if any(i.blocking for i in issues) else "#b45309"
            text = QLabel(
                f"<span style='color:{colour}'>●</span> <b>{ISSUE_TITLES.get(kind, kind)}</b>"
                f" ({len(issues)}): {escape(issues[0].message)}" + (" …" if len(issues) > 1 else "")
            )
            text.setWordWrap(True)
            self.issues_grid.addWidget(text, line, 0)
            if kind in FIX_VERBS:
                button = QPushButton(FIX_VERBS[kind])
                button.setToolTip(
                    "Your files stay as they are: rows are left out of this run, "
                    "and corrected copies of pictures are kept with the run."
                )
                button.setObjectName(f"fix_{kind}")
                button.clicked.connect(lambda _=False, k=kind: self.fix([k]))
                self.issues_grid.addWidget(button, line, 1)
        if groups:
            blocking = any(issue.blocking for issue in report.issues)
            note = (
                "<span style='color:#b91c1c'>● must be fixed before training</span>"
                if blocking
                else ""
            )
            note += "  <span style='color:#b45309'>● worth fixing</span>"
            self.issues_grid.addWidget(_hint(note), len(groups), 0)
        if len(fixable) > 1:
            fix_all = QPushButton("Fix all")
            fix_all.setObjectName("fix_all")
            fix_all.clicked.connect(lambda: self.fix(fixable))
            self.issues_grid.addWidget(fix_all, len(groups), 1)

    def isComplete(self) -> bool:
        report = self.session.report
        return (
            report is not None
            and bool(report.rows)
            and self.session.state != "checking"
            and not any(issue.blocking for issue in report.issues)
        )


class RecipePage(Page):
    def __init__(self, session: FinetuneSession, recipes: dict[str, tuple[str, str]]) -> None:
        super().__init__(
            session,
            "What to teach",
            "Choose what changes. Every value left on Automatic is chosen for you; "
            "the next page shows each choice and why.",
        )
        self.group = QButtonGroup(self)
        for index, (name, (title, line)) in enumerate(recipes.items()):
            button = QRadioButton(title)
            button.setObjectName(f"recipe_{name}")
            button.setChecked(name == session.settings.recipe)
            self.group.addButton(button, index)
            button.toggled.connect(lambda on, n=name: self._recipe(n) if on else None)
            self.layout_.addWidget(button)
            explanation = _hint(line)
            explanation.setContentsMargins(24, 0, 0, 8)
            self.layout_.addWidget(explanation)
        form = QFormLayout()
        self.epochs = _auto_spin(0, 1000)
        self.max_steps = _auto_spin(0, 1_000_000, "No limit")
        self.rank = _auto_spin(0, 256)
        self.batch = _auto_spin(0, 256)
        self.lr = QLineEdit()
        self.lr.setPlaceholderText("Automatic")
        self.quant = QComboBox()
        self.quant.addItems(["auto", "nf4", "none"])
        self.device = QComboBox()
        self.device.addItems(["auto", "cuda", "cpu"])
        form.addRow("Passes over the data (epochs)", self.epochs)
        form.addRow("Stop after at most (steps)", self.max_steps)
        form.addRow("LoRA rank", self.rank)
        form.addRow("Examples per step", self.batch)
        form.addRow("Learning rate", self.lr)
        form.addRow("Base precision (nf4 = 4-bit QLoRA)", self.quant)
        form.addRow("Device", self.device)
        self.layout_.addLayout(form)
        self.layout_.addStretch(1)

    def _recipe(self, name: str) -> None:
        self.session.settings.recipe = name  # type: ignore[assignment]

    def validatePage(self) -> bool:
        settings = self.session.settings
        settings.epochs = self.epochs.value() or None
        settings.max_steps = self.max_steps.value() or None
        settings.rank = self.rank.value() or None
        settings.batch_size = self.batch.value() or None
        try:
            settings.learning_rate = float(self.lr.text()) if self.lr.text().strip() else None
        except ValueError:
            self.lr.setStyleSheet("border: 1px solid #b91c1c;")
            return False
        settings.quant = self.quant.currentText()  # type: ignore[assignment]
        settings.device = self.device.currentText()  # type: ignore[assignment]
        return True


def _auto_spin(low: int, high: int, special: str = "Automatic") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSpecialValueText(special)
    return spin


class PlanPage(Page):
    def __init__(self, session: FinetuneSession) -> None:
        super().__init__(
            session,
            "The plan",
            "Every value with the reason it was chosen, the memory the run needs, and "
            "which words the model will learn to write.",
        )
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setObjectName("planSummary")
        self.layout_.addWidget(self.summary)
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("planSettings")
        self.table.setHorizontalHeaderLabels(["Setting", "Value", "Why"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.layout_.addWidget(self.table, 2)
        self.layout_.addWidget(
            QLabel(
                "<b>What will be trained</b> (one example: "
                "<span style='background:#bbf7d0'>green</span> is learned, grey is "
                "only read, blue boxes are the picture)"
            )
        )
        self.preview = QTextBrowser()
        self.preview.setObjectName("trainedPreview")
        self.preview.setMaximumHeight(110)
        self.layout_.addWidget(self.preview)

    def initializePage(self) -> None:
        if self.session.plan is None and self.session.state != "planning":
            self.session.plan_run(trial=True)
        self.refresh()

    @Slot()
    def refresh(self) -> None:
        plan = self.session.plan
        if plan is None:
            text = escape(self.session.error or self.session.message)
            self.summary.setText(
                f"<span style='color:#b91c1c'>{text}</span>" if self.session.error else text
            )
            super().refresh()
            return
        colour, verdict = VERDICT[plan.verdict]
        room = f" of {plan.available_bytes / GIB:.1f} GB" if plan.available_bytes else ""
        trial = ""
        if plan.trial is not None:
            trial = (
                f" A trial step on the longest examples peaked at {plan.trial.peak_bytes / GIB:.2f} GB."
                if plan.trial.ok
                else f" The trial step failed: {escape(plan.trial.message)}"
            )
        memory = ", ".join(f"{item.name} {item.bytes / GIB:.2f}" for item in plan.memory)
        advice = "".join(f"<br>→ {escape(line)}" for line in [*plan.advice, *plan.warnings])
        self.summary.setText(
            f"<b>{plan.total_steps} training steps</b> over {plan.train_rows} examples "
            f"({plan.eval_rows} held out). Longest example: {plan.longest_tokens} tokens, "
            f"{plan.longest_image_tokens} of them for the picture.<br>"
            f"Memory: <b style='color:{colour}'>{plan.total_bytes / GIB:.2f} GB{room} — {verdict}</b> "
            f"<span style='color:#6b7280'>({memory} GB)</span>.{trial}{advice}"
        )
        self.table.setRowCount(len(plan.settings))
        for row, choice in enumerate(plan.settings):
            name = QTableWidgetItem(SETTING_LABELS.get(choice.name, choice.name))
            value = QTableWidgetItem(_value(choice.value))
            reason = QTableWidgetItem(choice.reason if choice.auto else f"{choice.reason} (yours)")
            if not choice.auto:
                for item in (name, value, reason):
                    item.setForeground(QColor("#1d4ed8"))
            for column, item in enumerate((name, value, reason)):
                self.table.setItem(row, column, item)
        self.table.resizeColumnsToContents()
        self.preview.setHtml(_preview_html(plan.preview))
        super().refresh()

    def isComplete(self) -> bool:
        plan = self.session.plan
        return plan is not None and plan.verdict != "does_not_fit"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "automatic" if value is None else str(value)


def _preview_html(spans: list[pf.TokenSpan]) -> str:
    styles = {
        "prompt": "color:#6b7280",
        "trained": "background:#bbf7d0;color:#14532d",
        "image": "background:#dbeafe;color:#1e3a8a;border:1px solid #93c5fd",
        "pad": "color:#d1d5db",
    }
    parts = [
        f"<span style='{styles[s.kind]}'>{escape(s.text).replace(chr(10), '⏎<br>')}</span>"
        for s in spans
    ]
    return f"<div style='font-family:monospace'>{''.join(parts)}</div>"


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
        self.layout_.addLayout(_folder_row(self.out, "Folder for this run", self))
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.stop_button = QPushButton("Stop and save")
        for button, slot in (
            (self.start_button, self._start),
            (self.pause_button, session.pause),
            (self.resume_button, session.resume),
            (self.stop_button, session.stop),
        ):
            button.clicked.connect(slot)
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.layout_.addLayout(buttons)
        self.status = QLabel()
        self.status.setObjectName("trainStatus")
        self.status.setWordWrap(True)
        self.layout_.addWidget(self.status)
        self.progress = QProgressBar()
        self.layout_.addWidget(self.progress)
        self.plot = LossPlot()
        self.layout_.addWidget(self.plot, 1)
        self.layout_.addWidget(
            _hint(
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
            grid.addWidget(_hint(name), index // 4 * 2, index % 4)
            value = QLabel("–")
            value.setObjectName("metric")
            value.setStyleSheet("font-size: 15px; font-weight: 600;")
            self.values[name] = value
            grid.addWidget(value, index // 4 * 2 + 1, index % 4)
        self.layout_.addLayout(grid)
        self.notices = _hint("")
        self.layout_.addWidget(self.notices)
        session.metrics_added.connect(self._on_metrics)
        session.eval_added.connect(self._on_eval)

    def initializePage(self) -> None:
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
        self.values["Learning rate"].setText(f"{m.learning_rate:.6f}".rstrip("0"))
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
        self.start_button.setEnabled(state not in ("training", "stopping") and not session.run)
        self.pause_button.setEnabled(state == "training")
        self.stop_button.setEnabled(state == "training")
        self.resume_button.setEnabled(session.resumable)
        self.out.setReadOnly(bool(session.run) or state in ("training", "stopping"))
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
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setObjectName("evaluationSummary")
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
        _clear(self.cards_layout)
        for column, title in enumerate(("Picture", "Expected", "Base model", "With your adapter")):
            self.cards_layout.addWidget(QLabel(f"<b>{title}</b>"), 0, column)
        for row, probe in enumerate(e.probes, start=1):
            picture = QLabel()
            if probe.images:
                picture.setPixmap(thumbnail(Path(probe.images[0]), 72))
            self.cards_layout.addWidget(picture, row, 0)
            for column, text in enumerate((probe.reference, probe.base, probe.adapter), start=1):
                label = QLabel(escape(text) or "<i>(nothing)</i>")
                label.setWordWrap(True)
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
            _hint(
                "The base model is loaded as usual and the adapter is applied "
                "on top of it (also over a 4-bit base)."
            )
        )
        self.search_button = QPushButton("Rebuild the search index with the tuned model")
        self.search_button.clicked.connect(session.use_for_search)
        self.layout_.addWidget(self.search_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.destination = QLineEdit()
        self.destination.setPlaceholderText("Destination folder")
        self.layout_.addLayout(_folder_row(self.destination, "Destination folder", self))
        row = QHBoxLayout()
        self.export_button = QPushButton("Export the adapter folder")
        self.export_button.clicked.connect(lambda: session.export(self.destination.text().strip()))
        self.merge_button = QPushButton("Merge into a full model")
        self.merge_button.clicked.connect(lambda: session.merge(self.destination.text().strip()))
        row.addWidget(self.export_button)
        row.addWidget(self.merge_button)
        row.addStretch(1)
        self.layout_.addLayout(row)
        self.layout_.addWidget(
            _hint(
                "Merging writes a bf16 copy of the base with the adapter built in "
                "(never into a 4-bit model) and checks that it answers exactly "
                "like the adapter. Exporting copies the small adapter folder."
            )
        )
        self.outcome = QLabel()
        self.outcome.setObjectName("useOutcome")
        self.outcome.setWordWrap(True)
        self.layout_.addWidget(self.outcome)
        self.layout_.addStretch(1)

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


def _clear(layout: QGridLayout) -> None:
    while layout.count():
        item = layout.takeAt(0)
        widget = item.widget() if item is not None else None
        if widget is not None:
            widget.deleteLater()


def _elide(text: str, length: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"
