"""The models a user can pick: the Hugging Face cache and folders they added, plus the last choice."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal, Slot

log = logging.getLogger("visiondesk.models")

QUANTS = ("auto", "nf4", "int8", "none")
DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class ModelChoice:
    """What a chat job asks the engine for."""

    model: str | None = None  # a local folder or a Hugging Face repo id
    quant: str = "auto"
    device: str = "auto"


@dataclass(frozen=True)
class ModelEntry:
    model: str  # what goes into ``Chat.model``
    label: str
    source: str  # "hf-cache" | "folder"
    detail: str = ""  # size on disk, or the folder's path


def scan_hf_cache(cache_dir: Path | None = None) -> list[ModelEntry]:
    """Model repos in the local Hugging Face cache that have a ``config.json``. Slow-ish: run off
    the GUI thread. ``huggingface_hub`` is imported here so that start-up does not pay for it."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir(cache_dir)
    except Exception as error:  # no cache yet, unreadable cache: nothing to offer
        log.info("no Hugging Face cache to scan: %s", error)
        return []
    entries = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        files = {f.file_name for revision in repo.revisions for f in revision.files}
        if "config.json" in files:
            entries.append(
                ModelEntry(repo.repo_id, repo.repo_id, "hf-cache", repo.size_on_disk_str)
            )
    return sorted(entries, key=lambda e: e.label.lower())


def folder_entry(path: Path) -> ModelEntry:
    """An entry for a local model folder; ``ValueError`` with a sentence if it is not one."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"“{path.name}” does not look like a model folder: it has no config.json. "
            "Choose the folder that holds config.json and the weights."
        )
    return ModelEntry(str(path), path.name, "folder", str(path))


class ModelCatalog(QObject):
    """Entries are the added folders (instant) followed by the HF cache (scanned in a thread)."""

    entries_changed = Signal()
    _cache_scanned = Signal(object)  # emitted from the scanning thread, delivered on the GUI's

    def __init__(
        self,
        settings: QSettings | None = None,
        *,
        hf_cache_dir: Path | None = None,  # None: huggingface_hub's own (HF_HUB_CACHE, HF_HOME)
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._settings = settings or QSettings()
        self._hf_cache_dir = hf_cache_dir
        self._cache_entries: list[ModelEntry] = []
        self._scanning = False
        self._cache_scanned.connect(self._on_cache_scanned)

    def entries(self) -> list[ModelEntry]:
        folders = []
        for path in self._folders():
            try:
                folders.append(folder_entry(Path(path)))
            except ValueError:
                log.info("model folder %s is gone or no longer a model", path)
        return folders + self._cache_entries

    def refresh(self) -> None:
        """Rescan the Hugging Face cache in the background; ``entries_changed`` follows."""
        if self._scanning:
            return
        self._scanning = True
        threading.Thread(target=self._scan, name="hf-cache-scan", daemon=True).start()

    def _scan(self) -> None:
        entries = scan_hf_cache(self._hf_cache_dir)
        try:
            self._cache_scanned.emit(entries)
        except RuntimeError:  # the catalogue was deleted while we scanned (app closing)
            pass

    def is_scanning(self) -> bool:
        return self._scanning

    def add_folder(self, path: Path) -> ModelEntry:
        entry = folder_entry(path)
        folders = self._folders()
        if entry.model not in folders:
            self._settings.setValue("models/folders", [*folders, entry.model])
            self.entries_changed.emit()
        return entry

    def forget(self, model: str) -> None:
        """A model deleted from disk: out of the added folders and the remembered choice, and
        the Hugging Face cache scanned again (``entries_changed`` follows)."""
        folders = self._folders()
        if model in folders:
            self._settings.setValue("models/folders", [f for f in folders if f != model])
        if self._settings.value("models/last_model", "") == model:
            self._settings.setValue("models/last_model", "")
        self.entries_changed.emit()
        self.refresh()

    def last_choice(self) -> ModelChoice:
        model = self._settings.value("models/last_model", "") or None
        quant = str(self._settings.value("models/quant", "auto"))
        device = str(self._settings.value("models/device", "auto"))
        return ModelChoice(
            str(model) if model else None,
            quant if quant in QUANTS else "auto",
            device if device in DEVICES else "auto",
        )

    def save_choice(self, choice: ModelChoice) -> None:
        self._settings.setValue("models/last_model", choice.model or "")
        self._settings.setValue("models/quant", choice.quant)
        self._settings.setValue("models/device", choice.device)

    def _folders(self) -> list[str]:
        value = self._settings.value("models/folders", [])
        if isinstance(value, str):  # QSettings flattens a one-item list on some back ends
            return [value]
        return [str(v) for v in value] if isinstance(value, list | tuple) else []

    @Slot(object)
    def _on_cache_scanned(self, entries: list[ModelEntry]) -> None:
        self._scanning = False
        self._cache_entries = entries
        self.entries_changed.emit()
