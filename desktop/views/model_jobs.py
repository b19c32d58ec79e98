"""The Models view's state: the jobs it sends to the engine and what their events mean.

No widgets here. It talks to anything with ``send(command)`` and an ``event_received`` signal
(``EngineClient`` has both), and turns the engine's events into typed signals: the installed
list, plans, each download's progress, imports and deletions.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import msgspec
from PySide6.QtCore import QObject, Signal, Slot

from desktop.paths import runs_dir
from engine import protocol as p
from engine.protocol import models as pm

log = logging.getLogger("visiondesk.models")

CANCELLING = "Cancelling…"


class EngineLike(Protocol):
    event_received: Any  # a Qt signal carrying protocol events

    def send(self, command: p.Command) -> None: ...


@dataclass(frozen=True)
class DownloadState:
    repo_id: str
    job_id: str
    status: str  # running | paused | failed | done
    bytes_done: int = 0
    bytes_total: int = 0
    rate_bps: float = 0.0
    eta_s: float | None = None
    message: str = ""
    error_code: str | None = None  # why it failed (an ErrorCode or ModelsErrorCode)
    notice: str = ""  # something to know although it goes on (a token that was rejected)

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 0.0


class ModelJobs(QObject):
    installed_changed = Signal(list)  # list[InstalledModel]
    plan_ready = Signal(str, object)  # model, MemoryPlan
    plan_failed = Signal(str, str)  # model, sentence
    download_changed = Signal(object)  # DownloadState
    import_finished = Signal(str, str)  # the new folder ("" on failure), sentence
    delete_finished = Signal(str, str)  # model, sentence ("" when deleted)
    devices_changed = Signal(list)  # list[DeviceInfo]

    def __init__(
        self,
        engine: EngineLike,
        *,
        managed_root: Path,
        cache_dir: str | None = None,
        endpoint: str | None = None,
        folders: Callable[[], list[str]] = list,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._engine = engine
        self.managed_root = managed_root
        self.cache_dir = cache_dir
        self.endpoint = endpoint
        self._folders = folders
        self.devices: list[p.DeviceInfo] = []
        self.installed: list[pm.InstalledModel] = []
        self.downloads: dict[str, DownloadState] = {}
        self._jobs: dict[str, tuple[str, str]] = {}  # job id -> (kind, model or repo id)
        self.listed = False  # the installed list was asked for at least once
        self.answering: str | None = None  # the resident model, while it answers
        engine.event_received.connect(self._on_engine_event)

    # --- commands ------------------------------------------------------------------------

    def refresh_installed(self) -> None:
        self.listed = True
        folders = list(self._folders())
        if self.managed_root.is_dir():
            folders += [str(c) for c in sorted(self.managed_root.iterdir()) if c.is_dir()]
        # Hidden: an import in progress. A folder added twice (picker and import) is listed once.
        folders = list(dict.fromkeys(f for f in folders if not Path(f).name.startswith(".")))
        self._send(
            "list", "", pm.ListInstalled(job_id="", folders=folders, cache_dir=self.cache_dir)
        )

    def plan(
        self, model: str, *, quant: str = "auto", width: int = 1024, height: int = 768
    ) -> None:
        """Plan from config files; a repo that is not here has only its small files fetched."""
        command = pm.PlanMemory(
            job_id="",
            model=model,
            quant=quant,  # type: ignore[arg-type]
            image_width=width,
            image_height=height,
            fetch_config=True,
            endpoint=self.endpoint,
        )
        self._send("plan", model, command)

    def download(self, repo_id: str) -> None:
        current = self.downloads.get(repo_id)
        if current is not None and current.status == "running":
            return
        command = pm.DownloadModel(
            job_id="", repo_id=repo_id, cache_dir=self.cache_dir, endpoint=self.endpoint
        )
        job_id = self._send("download", repo_id, command)
        previous = current or DownloadState(repo_id, job_id, "running")
        self._update(
            replace(
                previous,
                job_id=job_id,
                status="running",
                message="Contacting the Hub…",
                error_code=None,
                notice="",
            )
        )

    def cancel_download(self, repo_id: str) -> None:
        state = self.downloads.get(repo_id)
        if state is not None and state.status == "running":
            # Not EngineClient.cancel: its grace period ends in killing the engine, and with it
            # any answer being written, for a download that is merely slow to stop.
            self._engine.send(p.Cancel(job_id=state.job_id))
            self._update(replace(state, message=CANCELLING))

    def import_folder(self, source: str, name: str | None = None) -> None:
        command = pm.ImportFolder(
            job_id="", source=source, destination_root=str(self.managed_root), name=name
        )
        self._send("import", source, command)

    def delete(self, model: str) -> None:
        command = pm.DeleteModel(
            job_id="",
            model=model,
            cache_dir=self.cache_dir,
            managed_root=str(self.managed_root),
            runs_dir=str(runs_dir()),
        )
        self._send("delete", model, command)

    def busy(self) -> bool:
        return bool(self._jobs)

    def downloading(self) -> list[str]:
        """The repos being downloaded now."""
        return sorted({key for kind, key in self._jobs.values() if kind == "download"})

    # --- events --------------------------------------------------------------------------

    @Slot(object)
    def _on_engine_event(self, event: p.Event) -> None:
        if isinstance(event, p.EngineStatus):
            loaded = event.loaded
            self.answering = loaded.model if event.state == "busy" and loaded else None
        if isinstance(event, (p.EngineStatus, p.Welcome)) and event.devices:
            self.devices = list(event.devices)
            self.devices_changed.emit(self.devices)
            if not self.listed:  # the engine is ready: list what is installed
                self.refresh_installed()
            return
        job = self._jobs.get(getattr(event, "job_id", ""))
        if job is None:
            return
        kind, key = job
        if kind == "download" and isinstance(event, p.PartialResult):
            if event.data.get("notice"):
                self._on_download_notice(key, str(event.data["notice"]))
            self._on_download_progress(key, event.data.get("download", {}))
        elif kind == "download" and isinstance(event, p.Progress) and event.total is None:
            self._on_download_status(key, event.message)  # before the first byte
        elif isinstance(event, p.Finished):
            del self._jobs[event.job_id]
            handler = getattr(self, f"_finished_{kind}")
            handler(key, event)

    def _on_download_status(self, repo_id: str, message: str) -> None:
        state = self.downloads.get(repo_id)
        if state is not None and message and state.message != CANCELLING:
            self._update(replace(state, message=message))

    def _on_download_notice(self, repo_id: str, notice: str) -> None:
        state = self.downloads.get(repo_id)
        if state is not None:
            self._update(replace(state, notice=notice))

    def _on_download_progress(self, repo_id: str, data: dict[str, Any]) -> None:
        state = self.downloads.get(repo_id)
        if state is None or not data:
            return
        format_bytes = pm.format_bytes
        rate = float(data.get("rate_bps") or 0.0)
        eta = data.get("eta_s")
        message = f"{format_bytes(data['bytes_done'])} of {format_bytes(data['bytes_total'])}"
        if rate:
            message += f" · {format_bytes(int(rate))}/s"
        if eta is not None and data["bytes_done"] < data["bytes_total"]:
            message += f" · {_duration(float(eta))} left"
        self._update(
            replace(
                state,
                bytes_done=int(data["bytes_done"]),
                bytes_total=int(data["bytes_total"]),
                rate_bps=rate,
                eta_s=eta,
                message=message,
            )
        )

    def _finished_list(self, _key: str, event: p.Finished) -> None:
        if event.reason == "cancelled" or event.error_code == p.ErrorCode.ENGINE_DIED:
            return  # the engine stopped (the window is closing, say): the next start lists again
        if event.reason != "done" or event.result is None:
            log.warning("listing installed models failed: %s", event.message)
            return
        self.installed = [msgspec.convert(m, pm.InstalledModel) for m in event.result["models"]]
        self.installed_changed.emit(self.installed)

    def _finished_plan(self, model: str, event: p.Finished) -> None:
        if event.reason == "done" and event.result is not None:
            self.plan_ready.emit(model, msgspec.convert(event.result["plan"], pm.MemoryPlan))
        else:
            self.plan_failed.emit(model, event.message or "The plan was cancelled.")

    def _finished_download(self, repo_id: str, event: p.Finished) -> None:
        state = self.downloads[repo_id]
        if event.reason == "done":
            self._update(replace(state, status="done", message="Downloaded"))
            self.refresh_installed()
        elif event.reason == "cancelled":
            self._update(replace(state, status="paused", message="Paused: resume to continue"))
        else:
            code = event.error_code
            self._update(replace(state, status="failed", message=event.message, error_code=code))

    def _finished_import(self, source: str, event: p.Finished) -> None:
        if event.reason == "done" and event.result is not None:
            self.import_finished.emit(event.result["path"], "")
            self.refresh_installed()
        else:
            self.import_finished.emit("", event.message or "The import was cancelled.")

    def _finished_delete(self, model: str, event: p.Finished) -> None:
        self.delete_finished.emit(model, "" if event.reason == "done" else event.message)
        self.refresh_installed()

    # --- helpers -------------------------------------------------------------------------

    def _send(self, kind: str, key: str, command: Any) -> str:
        job_id = uuid.uuid4().hex
        command.job_id = job_id
        self._jobs[job_id] = (kind, key)
        self._engine.send(command)
        return job_id

    def _update(self, state: DownloadState) -> None:
        self.downloads[state.repo_id] = state
        self.download_changed.emit(state)


def _duration(seconds: float) -> str:
    if seconds >= 90 * 60:
        return f"about {seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds:.0f} s"
