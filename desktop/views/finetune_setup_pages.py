"""The wizard's set-up pages: base model, data, recipe and plan."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Slot
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
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QWidget,
)

from desktop.state.finetune import AUTO_FIXES, FinetuneSession
from desktop.views.finetune_common import (
    FIX_VERBS,
    FIXED_WORDS,
    GIB,
    GRID_LIMIT,
    ISSUE_TITLES,
    SETTING_LABELS,
    VERDICT,
    Page,
    clear_layout,
    elide,
    folder_row,
    hint,
    html_label,
)
from desktop.views.thumbnails import thumbnail
from engine.protocol import finetune as pf


def nothing_read(report: pf.DatasetReport) -> str:
    """Why a dataset has no row at all, in the words of its format."""
    unread = [issue for issue in report.issues if issue.kind == "parse_error"]
    if report.format != "sidecar_txt":
        where = "metadata.jsonl" if report.format == "metadata_jsonl" else "the CSV file"
        return f"no row of {where} could be used"
    pictures = sum(1 for issue in unread if not issue.path.lower().endswith(".txt"))
    if not pictures:
        return "no caption file has a picture of the same name next to it"
    which = "the picture has" if pictures == 1 else f"none of the {pictures} pictures has"
    return f"{which} a caption file (a .txt file of the same name) that could be read"


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
            hint(
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
        self.layout_.addLayout(folder_row(self.folder, "Folder with your pictures", self))
        self.summary = html_label("dataSummary")
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
        if report.rows:
            self.summary.setText(f"<b>{len(report.rows)} {kind}.</b> {split}{escape(fixed)}")
        else:
            self.summary.setText(
                f"<span style='color:#b91c1c'><b>Nothing to train on:</b> {nothing_read(report)}."
                "</span> Fix the problems below, or choose another folder."
            )
        self._show_issues(report)
        self.grid.clear()
        problems = {issue.row: issue for issue in report.issues if issue.row is not None}
        for row in report.rows[:GRID_LIMIT]:
            label = elide(row.answer or "(no answer)", 70)
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
        clear_layout(self.issues_grid)
        groups: dict[str, list[pf.DatasetIssue]] = {}
        for issue in report.issues:
            groups.setdefault(issue.kind, []).append(issue)
        fixable = [kind for kind in groups if kind in FIX_VERBS]
        # With no row left, the rows that could not be read are what stands in the way.
        unreadable_blocks = not report.rows
        for line, (kind, issues) in enumerate(groups.items()):
            blocks = any(i.blocking for i in issues) or (
                unreadable_blocks and kind == "parse_error"
            )
            colour = "#b91c1c" if blocks else "#b45309"
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
            blocking = unreadable_blocks or any(issue.blocking for issue in report.issues)
            note = (
                "<span style='color:#b91c1c'>● must be fixed before training</span>"
                if blocking
                else ""
            )
            note += "  <span style='color:#b45309'>● worth fixing</span>"
            self.issues_grid.addWidget(hint(note), len(groups), 0)
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
            explanation = hint(line)
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
        self.summary = html_label("planSummary")
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
        # A plan made before the model, data or recipe changed is not the run that would start.
        if not self.session.plan_current and not self.session.busy:
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
            reason = QTableWidgetItem(choice.reason)  # yours say "set by you", in blue
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
