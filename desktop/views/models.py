"""The Models view: recommended models with fit badges, installed models, downloads.

Self-contained: it takes an engine (anything with ``send`` and ``event_received``) and emits
``use_model_requested(model)`` once a model is chosen and any consent it needs was given; the
window decides what "use" means (usually: make it the chat model and load it).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal, Slot
from PySide6.QtGui import QColor, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop import catalogue as cat
from desktop.consent import ConsentStore, ask_consent
from desktop.state.model_catalog import ModelCatalog
from desktop.views.model_jobs import DownloadState, EngineLike, ModelJobs
from desktop.views.model_picker import quant_words
from engine import protocol as p
from engine.protocol import models as pm

GROUPS = [
    ("auto", "For this computer"),
    ("cpu", "CPU only"),
    ("6gb", "6 GB GPU"),
    ("8-12gb", "8–12 GB GPU"),
    ("24gb", "24 GB GPU"),
    ("embeddings", "Image search (embeddings)"),
]
# "owner/name" as the Hub spells repository ids.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
VERDICT_COLORS = {"fits": "#15803d", "tight": "#b45309", "does_not_fit": "#b91c1c"}
ROLE = Qt.ItemDataRole.UserRole
# Failures a new token can mend: the download row offers to enter one.
TOKEN_ERRORS = (pm.ModelsErrorCode.GATED, pm.ModelsErrorCode.TOKEN_REJECTED)
# Failures after which nothing is left to resume: the row says "Try again", not "Resume".
FRESH_START_ERRORS = (
    p.ErrorCode.MODEL_NOT_FOUND,
    p.ErrorCode.UNSUPPORTED,
    p.ErrorCode.BAD_INPUT,
    pm.ModelsErrorCode.NOT_ENOUGH_DISK,
)


class ModelsView(QWidget):
    use_model_requested = Signal(str)
    model_deleted = Signal(str)  # a model (repo id or folder) that is gone from disk now

    def __init__(
        self,
        engine: EngineLike,
        *,
        settings: QSettings | None = None,
        catalogue: pm.Catalogue | None = None,
        consent: ConsentStore | None = None,
        managed_root: Path | None = None,
        cache_dir: str | None = None,
        endpoint: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        from desktop.paths import data_dir

        self.catalogue = catalogue or cat.load_catalogue()
        self.consent = consent or ConsentStore(settings)
        # The folders added with the model picker's "Add model folder…" are listed too.
        picker = ModelCatalog(settings, parent=self)
        self.jobs = ModelJobs(
            engine,
            managed_root=managed_root or data_dir() / "models",
            cache_dir=cache_dir,
            endpoint=endpoint,
            folders=lambda: [e.model for e in picker.entries() if e.source == "folder"],
            parent=self,
        )
        self.plans: dict[str, pm.MemoryPlan] = {}
        self._download_rows: dict[str, _DownloadRow] = {}
        self._build()
        self.jobs.installed_changed.connect(self._on_jobs_installed_changed)
        self.jobs.plan_ready.connect(self._on_jobs_plan_ready)
        self.jobs.plan_failed.connect(self._on_jobs_plan_failed)
        self.jobs.download_changed.connect(self._on_jobs_download_changed)
        self.jobs.import_finished.connect(self._on_jobs_import_finished)
        self.jobs.delete_finished.connect(self._on_jobs_delete_finished)
        self.jobs.devices_changed.connect(self.set_devices)
        self.set_devices([])

    # --- building --------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.device_label = QLabel()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        layout.addWidget(self.device_label)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_catalogue(), "Recommended")
        self.tabs.addTab(self._build_installed(), "Installed")
        self.tabs.addTab(self._build_downloads(), "Downloads")
        layout.addWidget(self.tabs)
        layout.addWidget(self.status_label)

    def _build_catalogue(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.group_combo = QComboBox()
        for key, label in GROUPS:
            self.group_combo.addItem(label, key)
        self.group_combo.currentIndexChanged.connect(self._fill_catalogue)
        self.find_edit = QLineEdit()
        self.find_edit.setObjectName("modelFind")
        self.find_edit.setPlaceholderText(
            "Find a model, or type any Hugging Face id (owner/name) to check or download it"
        )
        self.find_edit.setClearButtonEnabled(True)
        self.find_edit.textChanged.connect(self._fill_catalogue)
        self.catalogue_tree = _tree(["Model", "Size", "Good at", "Licence", "Fit"])
        self.catalogue_tree.currentItemChanged.connect(self._on_catalogue_selected)
        self.details = QLabel("Choose a model to see what it needs.")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        # A plan with advice is taller than a small window has room for: it scrolls, and the
        # splitter lets the user give it more room, rather than the window growing off screen.
        self.details_scroll = QScrollArea()
        self.details_scroll.setWidget(self.details)
        self.details_scroll.setWidgetResizable(True)
        self.details_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.details_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # The page's own colour shows through (setWidget turns the label's filling on).
        self.details_scroll.viewport().setAutoFillBackground(False)
        self.details.setAutoFillBackground(False)
        self.catalogue_split = QSplitter(Qt.Orientation.Vertical)
        self.catalogue_split.setChildrenCollapsible(False)
        self.catalogue_split.addWidget(self.catalogue_tree)
        self.catalogue_split.addWidget(self.details_scroll)
        self.catalogue_split.setSizes([1, 1])  # half each (scaled), until the user drags it
        self.check_button = QPushButton("Check fit")
        self.download_button = QPushButton("Download")
        self.check_button.clicked.connect(self._on_check_clicked)
        self.download_button.clicked.connect(self._on_download_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.check_button)
        buttons.addWidget(self.download_button)
        buttons.addStretch(1)
        top = QHBoxLayout()
        top.addWidget(self.group_combo)
        top.addWidget(self.find_edit, 1)
        layout.addLayout(top)
        layout.addWidget(self.catalogue_split, 1)
        layout.addLayout(buttons)
        return page

    def _build_installed(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.installed_tree = _tree(["Model", "Kind", "Size", "Status"])
        self.installed_tree.currentItemChanged.connect(self._update_installed_buttons)
        self.use_button = QPushButton("Use this model")
        self.delete_button = QPushButton("Delete")
        self.resume_button = QPushButton("Resume download")
        self.import_button = QPushButton("Import folder…")
        self.token_button = QPushButton("Hugging Face token…")
        refresh = QPushButton("Refresh")
        self.use_button.clicked.connect(self._on_use_clicked)
        self.delete_button.clicked.connect(self._on_delete_clicked)
        self.resume_button.clicked.connect(self._on_resume_clicked)
        self.import_button.clicked.connect(self._on_import_clicked)
        self.token_button.clicked.connect(self._on_token_clicked)
        refresh.clicked.connect(self.refresh)
        buttons = QHBoxLayout()
        for button in (self.use_button, self.delete_button, self.resume_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.token_button)
        buttons.addWidget(refresh)
        layout.addWidget(self.installed_tree, 1)
        layout.addLayout(buttons)
        self._update_installed_buttons()
        return page

    def _build_downloads(self) -> QWidget:
        page = QWidget()
        self.downloads_layout = QVBoxLayout(page)
        self.no_downloads = QLabel("No downloads yet.")
        self.downloads_layout.addWidget(self.no_downloads)
        self.downloads_layout.addStretch(1)
        # Rows scroll: several of them, each with a sentence, never squash or grow the window.
        scroll = QScrollArea()
        scroll.setWidget(page)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.viewport().setAutoFillBackground(False)
        page.setAutoFillBackground(False)
        return scroll

    # --- public ------------------------------------------------------------------------------

    def refresh(self) -> None:
        self.jobs.refresh_installed()

    def showEvent(self, event: QShowEvent) -> None:
        """The installed list, if the engine's start has not brought it yet."""
        super().showEvent(event)
        if not self.jobs.listed:
            self.refresh()

    @Slot(list)
    def set_devices(self, devices: list[p.DeviceInfo]) -> None:
        self.jobs.devices = list(devices)
        gpu = next((d for d in devices if d.kind == "cuda"), None)
        if gpu is not None:
            memory = pm.format_bytes(gpu.total_memory, binary=True)
            self.device_label.setText(f"GPU: {gpu.name} ({memory})")
        elif devices:
            self.device_label.setText("No CUDA GPU: models run on the CPU (choose a small one).")
        else:
            self.device_label.setText("Detecting devices…")
        self._fill_catalogue()

    def vram(self) -> int | None:
        gpu = next((d for d in self.jobs.devices if d.kind == "cuda"), None)
        return gpu.total_memory if gpu else None

    # --- catalogue ---------------------------------------------------------------------------

    @Slot()
    def _fill_catalogue(self) -> None:
        group = self.group_combo.currentData() or "auto"
        if group == "auto":
            group = cat.group_for(self.vram())
        selected = self._selected_repo()
        self.catalogue_tree.clear()
        wanted = self.find_edit.text().strip()
        entries = cat.picks(self.catalogue, group)
        if wanted:  # every model of the catalogue, not only this group's picks
            words = wanted.lower().split()
            entries = [
                entry
                for entry in self.catalogue.models
                if all(word in f"{entry.name} {entry.repo_id}".lower() for word in words)
            ]
        for entry in entries:
            item = QTreeWidgetItem(
                [entry.name, f"{entry.params_b:g} B", ", ".join(entry.good_at), entry.licence]
            )
            item.setData(0, ROLE, entry.repo_id)
            item.setToolTip(0, entry.repo_id)
            self._set_badge(item, entry)
            self.catalogue_tree.addTopLevelItem(item)
            if entry.repo_id == selected:
                self.catalogue_tree.setCurrentItem(item)
        known = {entry.repo_id.lower() for entry in entries}
        if _REPO_ID.match(wanted) and wanted.lower() not in known:
            self._add_hub_row(wanted, select=len(entries) == 0 or wanted == selected)
        if self.catalogue_tree.currentItem() is None:
            self.details.setText("Choose a model to see what it needs.")
        if self.catalogue.note and not self.catalogue.models:
            self.details.setText(self.catalogue.note)

    def _add_hub_row(self, repo_id: str, select: bool) -> None:
        """A repository the catalogue does not list: Check fit reads its config from the Hub."""
        item = QTreeWidgetItem([repo_id, "", "", "", ""])
        item.setData(0, ROLE, repo_id)
        item.setToolTip(0, f"{repo_id} on the Hugging Face Hub (not in VisionDesk's list)")
        plan = self.plans.get(repo_id)
        if plan is None:
            item.setText(4, "press Check fit")
        else:
            _show_fit(
                item, plan.verdict, f"{_words(plan.verdict)} · {quant_words(plan.quant)} (planned)"
            )
        self.catalogue_tree.addTopLevelItem(item)
        if select:
            self.catalogue_tree.setCurrentItem(item)

    def _set_badge(self, item: QTreeWidgetItem, entry: pm.CatalogueEntry) -> None:
        plan = self.plans.get(entry.repo_id)
        vram = self.vram()
        if plan is not None:
            verdict, text = (
                plan.verdict,
                f"{_words(plan.verdict)} · {quant_words(plan.quant)} (planned)",
            )
        elif vram is None:
            cpu = next((d for d in self.jobs.devices if d.kind == "cpu"), None)
            ram = cpu.total_memory if cpu else None
            verdict = pm.fit_verdict(int(entry.cpu_ram_gb * pm.GIB), ram)
            text = f"{_words(verdict)} · CPU, {entry.cpu_ram_gb:g} GiB RAM"
        else:
            quant = cat.best_quant(entry, vram)
            verdict = entry.fit(quant, vram)
            text = f"{_words(verdict)} · {quant_words(quant)}"
        _show_fit(item, verdict, text)

    def _selected_repo(self) -> str | None:
        item = self.catalogue_tree.currentItem() if hasattr(self, "catalogue_tree") else None
        return item.data(0, ROLE) if item is not None else None

    @Slot()
    def _on_catalogue_selected(self) -> None:
        repo_id = self._selected_repo()
        entry = self.catalogue.entry(repo_id) if repo_id else None
        if entry is None:
            if repo_id:
                self._show_hub_details(repo_id)
            return
        lines = [f"<b>{entry.name}</b> — <code>{entry.repo_id}</code>"]
        lines.append(
            f"{entry.params_b:g} B parameters · licence {entry.licence}"
            + (" · gated: accept the licence on the Hub and add a token" if entry.gated else "")
        )
        if entry.notes:
            lines.append(entry.notes)
        budget = entry.image_budget
        lines.append(
            "Memory estimate at "
            f"{budget.width}×{budget.height}: "
            + ", ".join(f"{q} {gb:g} GiB" for q, gb in entry.min_vram_gb.items())
        )
        plan = self.plans.get(entry.repo_id)
        if plan is not None:
            lines.append(_plan_html(plan))
        self.details.setText("<br>".join(lines))

    def _show_hub_details(self, repo_id: str) -> None:
        lines = [
            f"<code>{html.escape(repo_id)}</code> is not in VisionDesk's list. <i>Check fit</i> "
            "reads its configuration from the Hugging Face Hub (a few kilobytes) and works out "
            "the memory it needs; <i>Download</i> fetches it (its safetensors weights, where it "
            "has them)."
        ]
        plan = self.plans.get(repo_id)
        if plan is not None:
            lines.append(_plan_html(plan))
        self.details.setText("<br>".join(lines))

    @Slot()
    def _on_check_clicked(self) -> None:
        repo_id = self._selected_repo()
        entry = self.catalogue.entry(repo_id) if repo_id else None
        if entry is None:
            if repo_id:  # a Hub id typed in: planned at the engine's default picture size
                self.status_label.setText(f"Checking {repo_id}: fetching its config files…")
                self.jobs.plan(repo_id)
            return
        quant = cat.best_quant(entry, self.vram()) if self.vram() else "auto"
        self.status_label.setText(f"Checking {entry.name}: fetching its config files…")
        self.jobs.plan(
            entry.repo_id,
            quant=quant,
            width=entry.image_budget.width,
            height=entry.image_budget.height,
        )

    @Slot()
    def _on_download_clicked(self) -> None:
        repo_id = self._selected_repo()
        if repo_id:
            self.jobs.download(repo_id)
            self.tabs.setCurrentIndex(2)

    @Slot(str, object)
    def _on_jobs_plan_ready(self, model: str, plan: pm.MemoryPlan) -> None:
        self.plans[model] = plan
        self.status_label.setText(f"{model}: {_words(plan.verdict)} ({_gib(plan.total_bytes)}).")
        self._fill_catalogue()
        self._on_catalogue_selected()
        if any(entry.model == model for entry in self.jobs.installed):
            current = self._current_installed()
            self._on_jobs_installed_changed(self.jobs.installed)
            if current is not None:
                self._select_installed(current.model)

    @Slot(str, str)
    def _on_jobs_plan_failed(self, model: str, message: str) -> None:
        self.status_label.setText(f"Could not check {model}: {message}")

    # --- installed ---------------------------------------------------------------------------

    @Slot(list)
    def _on_jobs_installed_changed(self, models: list[pm.InstalledModel]) -> None:
        self.installed_tree.clear()
        for model in models:
            status = "complete" if model.complete else "incomplete"
            plan = self.plans.get(model.model)
            if plan is not None:
                status += f" · {_words(plan.verdict)} ({quant_words(plan.quant)}, {_gib(plan.total_bytes)})"
            if model.is_demo:
                status += " · demo (random weights)"
            if model.needs_consent:
                status += " · needs your consent"
            item = QTreeWidgetItem(
                [model.model, model.kind, pm.format_bytes(model.size_bytes), status]
            )
            item.setData(0, ROLE, model)
            item.setToolTip(0, model.path)
            self.installed_tree.addTopLevelItem(item)
        self._update_installed_buttons()

    def _select_installed(self, model: str) -> None:
        tree = self.installed_tree
        for index in range(tree.topLevelItemCount()):
            item = tree.topLevelItem(index)
            if item is not None and item.data(0, ROLE).model == model:
                tree.setCurrentItem(item)
                return

    def _current_installed(self) -> pm.InstalledModel | None:
        item = self.installed_tree.currentItem()
        return item.data(0, ROLE) if item is not None else None

    @Slot()
    def _update_installed_buttons(self) -> None:
        model = self._current_installed()
        if model is not None and model.complete and model.model not in self.plans:
            self.jobs.plan(model.model)  # the verdict before loading, from the local config
        self.use_button.setEnabled(model is not None and model.complete)
        self.delete_button.setEnabled(model is not None)
        self.resume_button.setEnabled(
            model is not None and not model.complete and model.source == "hf-cache"
        )

    @Slot()
    def _on_use_clicked(self) -> None:
        model = self._current_installed()
        if model is not None:
            self.use_model(model.model, model.needs_consent)

    def use_model(self, model: str, needs: list[str]) -> bool:
        """Ask for any consent the model needs (once), then emit ``use_model_requested``."""
        if not ask_consent(self.consent, model, needs, self):
            self.status_label.setText(f"{model} was not loaded: it needs your consent.")
            return False
        self.use_model_requested.emit(model)
        return True

    @Slot()
    def _on_delete_clicked(self) -> None:
        self.delete_selected(confirm=True)

    def delete_selected(self, confirm: bool = True) -> None:
        model = self._current_installed()
        if model is None:
            return
        if self.jobs.answering == model.model:  # the engine refuses too: say why at once
            self.status_label.setText(
                f"{model.model} is answering right now: stop the answer (or wait for it to end), "
                "then delete the model."
            )
            return
        if confirm:
            answer = QMessageBox.question(
                self, "Delete model", f"Delete {model.model} ({pm.format_bytes(model.size_bytes)})?"
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.jobs.delete(model.model)

    @Slot()
    def _on_resume_clicked(self) -> None:
        model = self._current_installed()
        if model is not None:
            self.jobs.download(model.model)
            self.tabs.setCurrentIndex(2)

    @Slot()
    def _on_import_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a model folder")
        if folder:
            self.jobs.import_folder(folder)

    @Slot()
    def _on_token_clicked(self) -> None:
        self.ask_hub_token()

    def ask_hub_token(self) -> bool:
        """The token dialog; True when a token was saved (or removed) in the keyring."""
        token, ok = QInputDialog.getText(
            self,
            "Hugging Face token",
            "A token lets VisionDesk download gated models whose licence you accepted on the "
            "Hub. It is kept in the system keyring. Leave empty to remove it.",
            QLineEdit.EchoMode.Password,
        )
        return ok and self.set_hub_token(token.strip())

    @Slot(str)
    def _on_row_token_requested(self, repo_id: str) -> None:
        """A gated repo, or a rejected token: ask for one, then try the download again."""
        if self.ask_hub_token():
            self.jobs.download(repo_id)

    def set_hub_token(self, token: str) -> bool:
        """Keep (or, when empty, forget) the Hub token in the OS keyring, where the engine reads
        it for downloads."""
        try:
            import keyring
            import keyring.errors

            if token:
                keyring.set_password(pm.HUB_TOKEN_SERVICE, pm.HUB_TOKEN_USER, token)
            else:
                try:
                    keyring.delete_password(pm.HUB_TOKEN_SERVICE, pm.HUB_TOKEN_USER)
                except keyring.errors.PasswordDeleteError:
                    pass  # there was none
        except Exception as error:  # no keyring on this system: say so, keep nothing in files
            self.status_label.setText(
                f"The token could not be kept in the system keyring ({error}); set HF_TOKEN instead."
            )
            return False
        self.status_label.setText(
            "Token saved in the system keyring." if token else "Token removed."
        )
        return True

    @Slot(str, str)
    def _on_jobs_import_finished(self, path: str, message: str) -> None:
        self.status_label.setText(f"Imported to {path}." if path else f"Import failed: {message}")

    @Slot(str, str)
    def _on_jobs_delete_finished(self, model: str, message: str) -> None:
        self.consent.revoke(model)
        self.status_label.setText(f"Deleted {model}." if not message else message)
        if not message:
            self.model_deleted.emit(model)

    # --- downloads ---------------------------------------------------------------------------

    @Slot(object)
    def _on_jobs_download_changed(self, state: DownloadState) -> None:
        row = self._download_rows.get(state.repo_id)
        if row is None:
            row = _DownloadRow(state.repo_id)
            row.cancel_requested.connect(self.jobs.cancel_download)
            row.resume_requested.connect(self.jobs.download)
            row.token_requested.connect(self._on_row_token_requested)
            self._download_rows[state.repo_id] = row
            self.downloads_layout.insertWidget(self.downloads_layout.count() - 1, row)
            self.no_downloads.hide()
        row.show_state(state)

    def download_row(self, repo_id: str) -> _DownloadRow | None:
        return self._download_rows.get(repo_id)


class _DownloadRow(QWidget):
    """One download: name, progress bar, what is happening, and what can be done next."""

    cancel_requested = Signal(str)
    resume_requested = Signal(str)  # resume, or try again: the same download command
    token_requested = Signal(str)

    def __init__(self, repo_id: str) -> None:
        super().__init__()
        self.repo_id = repo_id
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(QLabel(f"<b>{repo_id}</b>"), 1)
        self.button = QPushButton("Cancel")
        self.button.clicked.connect(self._on_button_clicked)
        top.addWidget(self.button)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.text = QLabel()
        self.text.setWordWrap(True)
        layout.addLayout(top)
        layout.addWidget(self.bar)
        layout.addWidget(self.text)
        self.status = ""
        self.action = "Cancel"

    def show_state(self, state: DownloadState) -> None:
        self.status = state.status
        self.action = _next_action(state)
        self.bar.setValue(1000 if state.status == "done" else int(state.fraction * 1000))
        self.text.setText("\n".join(line for line in (state.message, state.notice) if line))
        self.button.setVisible(self.action != "")
        self.button.setText(self.action)

    @Slot()
    def _on_button_clicked(self) -> None:
        if self.action == "Cancel":
            self.cancel_requested.emit(self.repo_id)
        elif self.action == "Enter token…":
            self.token_requested.emit(self.repo_id)
        else:
            self.resume_requested.emit(self.repo_id)


def _next_action(state: DownloadState) -> str:
    """The row's button: Cancel while it runs; after a failure, what can mend it."""
    if state.status == "running":
        return "Cancel"
    if state.status == "paused":
        return "Resume"
    if state.status != "failed":
        return ""
    if state.error_code in TOKEN_ERRORS:
        return "Enter token…"
    if state.error_code in FRESH_START_ERRORS or state.bytes_done <= 0:
        return "Try again"  # nothing of it was fetched, or nothing worth keeping
    return "Resume"


def _show_fit(item: QTreeWidgetItem, verdict: str, text: str) -> None:
    """The Fit column: the verdict in words, coloured by it."""
    item.setText(4, text)
    item.setData(4, ROLE, verdict)
    if verdict in VERDICT_COLORS:
        item.setForeground(4, QColor(VERDICT_COLORS[verdict]))


def _tree(headers: list[str]) -> QTreeWidget:
    tree = QTreeWidget()
    tree.setHeaderLabels(headers)
    tree.setRootIsDecorated(False)
    tree.setUniformRowHeights(True)
    header = tree.header()
    header.setStretchLastSection(False)
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # the model's name
    return tree


def _words(verdict: str) -> str:
    return verdict.replace("_", " ")


def _gib(value: int) -> str:
    return pm.format_bytes(value, binary=True)


def _plan_html(plan: pm.MemoryPlan) -> str:
    rows = "".join(
        f"<tr><td>{label.strip()}</td><td>{value}</td></tr>"
        for label, value in pm.describe_plan(plan)
        if label not in ("model",)
    )
    advice = "".join(f"<li>{line}</li>" for line in plan.advice)
    return f"<table>{rows}</table>" + (f"<ul>{advice}</ul>" if advice else "")
