"""The Extract page's logic: a batch queue read through the engine one file at a time, page
previews, schemas, the user's corrections and exports. No widgets.

Every page result is stored in the queue (SQLite) the moment it arrives. When the engine dies,
``EngineClient`` ends the running job with ``engine_died`` and starts a new engine; the file goes
back to the queue and is sent again with its stored pages as ``completed_pages`` once the new
engine is ready, so nothing that was finished is read twice. When the engine is stopped on
purpose (the app quits), the job ends as cancelled (the engine's own doing) or as
``engine_died`` without an ``engine_died`` signal first; either way the file waits in the queue
without counting as a death, and the batch is offered for resuming next time.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from desktop.extraction_queue import (
    Batch,
    BatchStatus,
    ExtractionQueue,
    FileStatus,
    QueuedFile,
    supported_files,
)
from engine import protocol as p
from engine.protocol import extract as px
from engine.protocol.cloud import CLOUD_ONLY, CONSENT_NEEDED, LOCAL_THEN_ASK, LOCAL_THEN_CLOUD

MAX_ENGINE_DEATHS_PER_FILE = 3
PREVIEW_LONG_SIDE = 1100
PREVIEW_PAGES = 40  # pages rendered ahead; others on demand
PAGES_ON_DEMAND = 8  # a page opened that was not rendered ahead, and the ones after it


@dataclass
class SchemaChoice:
    """What a batch is read into: a built-in name, a schema file, or a schema built from fields."""

    key: str  # the built-in name or the file path; "custom:<title>" for a built one
    title: str
    schema: dict[str, Any] | None = None  # the JSON Schema, once the engine has checked it
    inline: bool = False  # sent as ``schema_json`` rather than by name

    def settings(self) -> dict[str, Any]:
        return {
            "schema": self.key,
            "schema_title": self.title,
            "schema_json": self.schema if self.inline else None,
        }


UNDO_LIMIT = 100  # edits kept for Ctrl+Z, across files


class ExtractionSession(QObject):
    """Drives one batch at a time; views listen to its signals and call its methods."""

    queue_changed = Signal()  # files added, removed, or a file's status changed
    file_progress = Signal(int, str)  # file id, what the engine is doing
    page_stored = Signal(int, int)  # file id, page
    document_changed = Signal(int)  # file id: its result (or an edit's merge) changed
    previews_changed = Signal(int)  # file id: page images are ready (or failed)
    schemas_changed = Signal()
    schema_checked = Signal(object)  # SchemaChoice, after a file or a built one passed CheckSchema
    batch_changed = Signal()  # the current batch, or its status, changed
    notice = Signal(str, str)  # text, level (info | warning | error)
    # Policy "local, then ask": the local model could not read this file (id) and the engine's
    # sentence says where it would go; the batch waits, paused, for send_to_cloud() or Resume.
    cloud_consent_needed = Signal(int, str)
    export_finished = Signal(str, str)  # path, error message ("" when it worked)

    def __init__(
        self,
        client: Any,
        queue: ExtractionQueue,
        *,
        preview_dir: Path,
        replot_dir: Path,
        model_choice: Callable[[], Any] = lambda: None,
        routing: Callable[..., dict[str, Any]] | None = None,
        adapter: Callable[[], str | None] = lambda: None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.client = client
        self.queue = queue
        self.preview_dir = preview_dir
        self.replot_dir = replot_dir
        self.model_choice = model_choice
        self.adapter = adapter  # the LoRA adapter Chat uses over the chosen model, if any
        self.routing = routing or (lambda **kw: {"never_send": kw.get("never_send", False)})
        self.schemas: dict[str, SchemaChoice] = {
            name: SchemaChoice(name, name.replace("_", " ").capitalize())
            for name in px.BUILTIN_SCHEMAS
        }
        self.schema = self.schemas["invoice"]
        self.two_pass = True
        self.options: dict[str, Any] = {}  # other ExtractOptions fields (token and pixel limits)
        self.never_send_new = False
        self.batch_id: str | None = None
        self.previews: dict[int, dict[int, str]] = {}
        self.preview_errors: dict[int, str] = {}
        self.page_counts: dict[int, int] = {}
        self._previews_pending: set[int] = set()  # files being inspected for their page count
        self._pages_pending: dict[int, set[int]] = {}  # file id: pages being rendered
        self.activity: dict[int, str] = {}
        self._jobs: dict[str, Callable[[p.Event], None]] = {}
        self._running: tuple[str, int] | None = None  # (job id, file id) of the extraction
        self._cancel_asked = False  # the running extraction was cancelled by this session
        self._schemas_requested = False
        self._engine_down = False  # died, and the new engine has not said Welcome yet
        self._cloud_files: set[int] = set()  # files the user said yes to sending, once each
        # Files covered by a "Yes to All": those still to read when it was said (one dropped
        # later is asked about again).
        self._cloud_later: set[int] = set()
        self.paused_because = ""  # why the batch waits, where the user's answer paused it
        # Edits to undo, latest last: (file id, page, what the page said before, was it an edit).
        self._undo: list[tuple[int, int, Any, bool]] = []
        client.event_received.connect(self._on_client_event)
        client.engine_died.connect(self._on_client_engine_died)
        client.welcome_received.connect(self._on_client_welcome_received)
        recovered = queue.recover()
        if recovered:
            self.batch_id = recovered[0].id
            queue.pause(recovered[0].id)  # an interrupted batch waits for the user's Resume
        elif queue.batches():
            self.batch_id = queue.batches()[0].id

    # --- reading the state ------------------------------------------------------------------

    @property
    def batch(self) -> Batch | None:
        return self.queue.batch(self.batch_id) if self.batch_id else None

    def files(self) -> list[QueuedFile]:
        return self.queue.files(self.batch_id) if self.batch_id else []

    def is_running(self) -> bool:
        return self._running is not None

    def running_file(self) -> int | None:
        return self._running[1] if self._running else None

    def schema_for(self, batch: Batch | None = None) -> dict[str, Any] | None:
        """The JSON Schema a batch's results must conform to (None until the engine sent it)."""
        batch = batch or self.batch
        if batch is None:
            return None
        if batch.settings.get("schema_json"):
            return dict(batch.settings["schema_json"])
        choice = self.schemas.get(str(batch.settings.get("schema")))
        return choice.schema if choice else None

    # --- schemas ----------------------------------------------------------------------------

    def request_schemas(self) -> None:
        """Ask the engine for the built-in schemas once (their titles and JSON Schemas)."""
        if self._schemas_requested:
            return
        self._schemas_requested = True
        self._send(px.ListSchemas(job_id=_job_id()), self._on_schemas_listed)

    def choose_schema(self, key: str) -> None:
        if key in self.schemas:
            self.schema = self.schemas[key]

    def check_schema_file(self, path: Path) -> None:
        """Load a user's JSON Schema file through the engine's checks; ``schema_checked`` follows."""
        command = px.CheckSchema(job_id=_job_id(), schema=str(path))
        self._send(command, lambda event: self._on_schema_checked(event, str(path), inline=False))

    def build_schema(self, fields: list[px.FieldSpec], title: str) -> None:
        """A schema from field names and types, checked by the engine like any other."""
        try:
            schema = px.schema_from_fields(fields, title=title or "Custom")
        except ValueError as exc:
            self.notice.emit(str(exc), "error")
            return
        command = px.CheckSchema(job_id=_job_id(), schema_json=schema)
        key = f"custom:{title or 'Custom'}"
        self._send(command, lambda event: self._on_schema_checked(event, key, inline=True))

    # --- the batch ----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {**self.schema.settings(), "two_pass": self.two_pass, "options": self.options}

    def add_paths(self, paths: list[Path]) -> list[QueuedFile]:
        """Files and folders (searched for supported files) join the current batch and start."""
        files, skipped = supported_files(paths)
        if skipped:
            names = ", ".join(path.name for path in skipped[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            self.notice.emit(f"Skipped {names}{more}: not a PDF or an image.", "warning")
        if not files:
            return []
        self.request_schemas()
        batch = self.batch
        settings = self.settings()
        if (
            batch is None
            or batch.status == BatchStatus.CANCELLED
            or not _same_reading(batch.settings, settings)
        ):
            if batch is not None and batch.status == BatchStatus.ACTIVE:
                self.pause()  # the batch read so far waits, resumable, in the batch list
            batch = self.queue.create_batch(settings)
            self.batch_id = batch.id
            self.batch_changed.emit()
        added = self.queue.add_files(batch.id, files, never_send=self.never_send_new)
        if batch.status == BatchStatus.DONE:
            self.queue.resume(batch.id)
        for file in added:
            self.request_previews(file.id)
        self.queue_changed.emit()
        self._pump()
        return added

    def open_batch(self, batch_id: str) -> None:
        if self._running is not None:
            self.pause()
        self.batch_id = batch_id
        self.batch_changed.emit()
        self.queue_changed.emit()

    def pause(self) -> None:
        if self.batch_id is None:
            return
        self.queue.pause(self.batch_id)
        if self._running is not None:
            self._cancel_asked = True
            self.client.cancel(self._running[0])  # its Finished(cancelled) requeues the file
        self.batch_changed.emit()

    def resume(self) -> None:
        if self.batch_id is None:
            return
        self.paused_because = ""
        self.queue.resume(self.batch_id)
        self.batch_changed.emit()
        self.queue_changed.emit()
        self._pump()

    def cancel(self) -> None:
        if self.batch_id is None:
            return
        self.queue.cancel(self.batch_id)
        if self._running is not None:  # its Finished(cancelled) carries the pages read so far
            self._cancel_asked = True
            self.client.cancel(self._running[0])
        for file in self.files():  # paused earlier with pages stored: those are its result
            waiting = file.status == FileStatus.CANCELLED and file.id != self.running_file()
            if waiting and file.document is None and file.pages_done:
                self._remerge(file)
        self.batch_changed.emit()
        self.queue_changed.emit()

    def send_to_cloud(self, file_id: int, whole_batch: bool = False) -> None:
        """The user's yes to "local, then ask": this file goes to the cloud service, and with
        ``whole_batch`` every file of its batch still to read goes there too where the local
        model cannot read it, without asking again; a file added later is asked about, and one
        marked "never send" stays local all the same. The batch resumes."""
        file = self.queue.file(file_id)
        if file is None:
            return
        if whole_batch:
            waiting = (FileStatus.QUEUED, FileStatus.RUNNING)
            self._cloud_later |= {
                f.id for f in self.queue.files(file.batch_id) if f.status in waiting
            }
        if not file.never_send:
            self._cloud_files.add(file_id)
        self.resume()

    def decline_cloud(self, file_id: int) -> None:
        """The user's no: the batch stays paused, saying why for as long as it is."""
        file = self.queue.file(file_id)
        name = file.name if file is not None else "The file"
        self.paused_because = (
            f"Paused: {name} was not sent. Resume tries the local model again; Settings → "
            "Routing says where documents may go."
        )
        self.batch_changed.emit()

    def retry_file(self, file_id: int) -> None:
        """Read a file again: the pages without a valid answer, or all of it if it changed."""
        self.queue.refresh_sha(file_id)
        self.queue.retry_file(file_id)
        self.queue_changed.emit()
        self.batch_changed.emit()
        self._pump()

    def set_never_send(self, file_id: int, never_send: bool) -> None:
        self.queue.set_never_send(file_id, never_send)
        self.queue_changed.emit()

    # --- engine jobs --------------------------------------------------------------------------

    def _send(self, command: Any, handler: Callable[[p.Event], None]) -> None:
        self._jobs[command.job_id] = handler
        self.client.send(command)

    @Slot(object)
    def _on_client_engine_died(self, _outcome: object) -> None:
        self._engine_down = True

    @Slot(object)
    def _on_client_welcome_received(self, _welcome: object) -> None:
        """A (re)started engine: the file that was being read when the last one died goes on."""
        self._engine_down = False
        self._pump()

    @Slot(object)
    def _on_client_event(self, event: p.Event) -> None:
        handler = self._jobs.get(getattr(event, "job_id", None) or "")
        if handler is None:
            return
        if isinstance(event, p.Finished):
            self._jobs.pop(event.job_id, None)
        handler(event)

    def _pump(self) -> None:
        """Send the next file if nothing is being read and the batch is active."""
        if self._running is not None or self.batch_id is None:
            return
        file = self.queue.next_file(self.batch_id)
        if file is None:
            self.batch_changed.emit()
            return
        choice = self.model_choice()
        routing = self.routing(never_send=file.never_send)
        if file.id in self._cloud_files:  # the user's yes for this file: straight to the cloud
            self._cloud_files.discard(file.id)
            routing = {**routing, "policy": CLOUD_ONLY}
        elif file.id in self._cloud_later and routing.get("policy") == LOCAL_THEN_ASK:
            routing = {**routing, "policy": LOCAL_THEN_CLOUD}  # still local first, never asked
        local_only = routing.get("policy") in (None, "local_only") and not routing.get("backend")
        if local_only and not getattr(choice, "model", None):
            self.queue.pause(self.batch_id)
            self.notice.emit("Choose a model in the toolbar, then press Resume.", "warning")
            self.batch_changed.emit()
            return
        batch = self.batch
        assert batch is not None
        self.queue.start_file(file.id)
        command = px.Extract(
            job_id=_job_id(),
            path=str(file.path),
            schema=str(batch.settings.get("schema") or "key_values"),
            schema_json=batch.settings.get("schema_json"),
            model=getattr(choice, "model", None) or None,
            quant=getattr(choice, "quant", "auto"),
            device=getattr(choice, "device", "auto"),
            options=px.ExtractOptions(
                two_pass=bool(batch.settings.get("two_pass", True)),
                **(batch.settings.get("options") or {}),
            ),
            completed_pages=self.queue.completed_pages(file.id),
            replot_dir=str(self.replot_dir),
            adapter=self.adapter() if getattr(choice, "model", None) else None,
            **routing,
        )
        self._running = (command.job_id, file.id)
        self._cancel_asked = False
        self.activity[file.id] = "Starting…"
        self._send(command, lambda event: self._on_extract_event(file.id, event))
        self.queue_changed.emit()
        self.batch_changed.emit()

    def _on_extract_event(self, file_id: int, event: p.Event) -> None:
        if isinstance(event, p.Progress):
            if event.stage == "page" and event.total:
                stored = len(self.queue.pages(file_id))
                remaining = int(event.total) - int(event.current)
                self.queue.set_pages_total(file_id, stored + remaining)
            if event.message:
                self.activity[file_id] = event.message
            self.file_progress.emit(file_id, self.activity.get(file_id, ""))
        elif isinstance(event, p.PartialResult) and event.data.get("kind") == "page":
            self.queue.store_page(file_id, event.data)
            self.page_stored.emit(file_id, int(event.data["page"]))
            self.file_progress.emit(file_id, self.activity.get(file_id, ""))
        elif isinstance(event, p.Finished):
            self._running = None
            self.activity.pop(file_id, None)
            self._on_extract_finished(file_id, event)
            self.queue_changed.emit()
            self.document_changed.emit(file_id)
            # An engine that died, or cancelled the job itself as it shut down, gets no more
            # work; the next one to say Welcome does.
            died = event.error_code == p.ErrorCode.ENGINE_DIED
            if not died and (event.reason != "cancelled" or self._cancel_asked):
                self._pump()

    def _on_extract_finished(self, file_id: int, event: p.Finished) -> None:
        file = self.queue.file(file_id)
        if file is None:
            return
        if event.reason in ("done", "length"):
            self.queue.finish_file(file_id, event.result or {})
        elif event.reason == "cancelled":
            if file.status == FileStatus.RUNNING:  # paused, not cancelled: read the rest later
                self.queue.requeue_file(file_id)
            elif (event.result or {}).get("pages"):  # cancelled: the pages read are its result
                self.queue.set_document(file_id, event.result or {})
        elif event.error_code == CONSENT_NEEDED:
            # Nothing leaves the machine without a yes: the file waits in the queue, and the
            # batch with it, while the window asks.
            self.queue.requeue_file(file_id, reset_attempts=True)
            self.queue.pause(file.batch_id)
            self.batch_changed.emit()
            # Asked once the window shows the paused batch, so that its answer has the last word.
            message = event.message
            QTimer.singleShot(0, lambda: self.cloud_consent_needed.emit(file_id, message))
        elif event.error_code == p.ErrorCode.ENGINE_DIED and not self._engine_down:
            self.queue.requeue_file(file_id)  # shut down on purpose: not this file's fault
        elif event.error_code == p.ErrorCode.ENGINE_DIED:
            if file.attempts >= MAX_ENGINE_DEATHS_PER_FILE:
                self.queue.fail_file(
                    file_id,
                    event.error_code,
                    f"{event.message} It stopped {file.attempts} times on this file.",
                )
            else:  # the client restarts the engine; its Welcome sends the file again
                self.queue.requeue_file(file_id)
                self.notice.emit(
                    f"The engine stopped while reading {file.name}; it was restarted and the "
                    "batch goes on with the pages left.",
                    "warning",
                )
        else:
            self.queue.fail_file(file_id, event.error_code, event.message)

    # --- previews -----------------------------------------------------------------------------

    def request_previews(self, file_id: int, pages: list[int] | None = None) -> None:
        """Render page images: the given pages, or the first ones once the page count is known."""
        file = self.queue.file(file_id)
        if file is None:
            return
        if pages is not None:
            pending = self._pages_pending.setdefault(file_id, set())
            rendered = self.previews.get(file_id, {})
            wanted = [n for n in pages if n not in pending and n not in rendered]
            if wanted:
                self._render(file, wanted)
            return
        if file_id in self._previews_pending:
            return
        self._previews_pending.add(file_id)
        command = px.InspectDocument(job_id=_job_id(), path=str(file.path))
        self._send(command, lambda event: self._on_inspected(file, event))

    def request_page_preview(self, file_id: int, number: int) -> None:
        """Render a page the user opened that was not rendered ahead, and a few after it."""
        count = self.page_counts.get(file_id, 0)
        if not count or file_id in self.preview_errors:
            return  # not inspected yet (its first pages come then), or it cannot be rendered
        if number not in self.previews.get(file_id, {}):
            last = min(number + PAGES_ON_DEMAND - 1, count)
            self.request_previews(file_id, list(range(number, last + 1)))

    def _on_inspected(self, file: QueuedFile, event: p.Event) -> None:
        if not isinstance(event, p.Finished):
            return
        if event.reason == "error":
            self._on_previews(file.id, event)
            return
        count = int((event.result or {}).get("page_count") or 0)
        self.page_counts[file.id] = count
        self._render(file, list(range(1, min(count, PREVIEW_PAGES) + 1)))

    def _render(self, file: QueuedFile, pages: list[int]) -> None:
        command = px.RenderPages(
            job_id=_job_id(),
            path=str(file.path),
            out_dir=str(self.preview_dir),
            pages=pages,
            max_long_side=PREVIEW_LONG_SIDE,
        )
        self._pages_pending.setdefault(file.id, set()).update(pages)
        self._send(command, lambda event: self._on_previews(file.id, event, pages))

    def _on_previews(self, file_id: int, event: p.Event, pages: list[int] | None = None) -> None:
        if not isinstance(event, p.Finished):
            return
        self._previews_pending.discard(file_id)
        self._pages_pending.get(file_id, set()).difference_update(pages or [])
        if event.reason == "error":
            if event.error_code != p.ErrorCode.ENGINE_DIED:
                self.preview_errors[file_id] = event.message
        else:
            result = event.result or {}
            self.page_counts[file_id] = int(result.get("page_count") or 0)
            rendered = self.previews.setdefault(file_id, {})
            for page in result.get("pages") or []:
                rendered[int(page["page"])] = str(page["path"])
        self.previews_changed.emit(file_id)

    # --- edits and exports --------------------------------------------------------------------

    def save_edit(self, file_id: int, page: int, data: Any) -> None:
        """Store the user's corrected data for a page, and merge the document again."""
        self._remember_for_undo(file_id, page)
        self.queue.save_edit(file_id, page, data)
        self._apply_edit(file_id, page, data)

    def revert_edit(self, file_id: int, page: int) -> None:
        """Back to the model's answer for a page (undoable, like an edit)."""
        stored = self.queue.page(file_id, page)
        if stored is None or not stored.has_edit:
            return
        self._remember_for_undo(file_id, page)
        self.queue.clear_edit(file_id, page)
        self._apply_edit(file_id, page, stored.result.get("data"))

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo_edit(self) -> tuple[int, int] | None:
        """Take back the latest edit or revert; returns its (file id, page), None if none is left.

        An edit to a page that is gone since (its batch deleted, the page read again) is
        skipped."""
        while self._undo:
            file_id, page, before, was_edit = self._undo.pop()
            stored = self.queue.page(file_id, page)
            if stored is None:
                continue
            if was_edit:
                self.queue.save_edit(file_id, page, before)
            else:
                self.queue.clear_edit(file_id, page)
            self._apply_edit(file_id, page, before if was_edit else stored.result.get("data"))
            return file_id, page
        return None

    def _remember_for_undo(self, file_id: int, page: int) -> None:
        stored = self.queue.page(file_id, page)
        if stored is not None:
            self._undo.append((file_id, page, copy.deepcopy(stored.edited), stored.has_edit))
            del self._undo[:-UNDO_LIMIT]

    def _apply_edit(self, file_id: int, page: int, data: Any) -> None:
        """Put a page's data (edited or the model's) into its document, merged again."""
        file = self.queue.file(file_id)
        if file is None or file.document is None:
            return
        document = copy.deepcopy(file.document)
        pages = document.get("pages") or []
        for entry in pages:
            if entry.get("page") == page:
                entry["data"] = data
        if len(pages) <= 1:  # one page: the document is that page
            document["data"] = data
            self.queue.set_document(file_id, document)
            self.document_changed.emit(file_id)
            return
        self.queue.set_document(file_id, document)
        self._remerge(file)

    def _remerge(self, file: QueuedFile) -> None:
        """Merge the stored pages (with edits) again: an ``Extract`` with nothing left to read.

        The engine merges pages it is given without opening the file, so this works for a file
        moved or changed since. The document keeps what only the file could say (its path,
        hash, page count and format) from when it was read.
        """
        batch = self.queue.batch(file.batch_id)
        if batch is None:
            return
        completed = self.queue.completed_pages(file.id)
        command = px.Extract(
            job_id=_job_id(),
            path=str(file.path),
            schema=str(batch.settings.get("schema") or "key_values"),
            schema_json=batch.settings.get("schema_json"),
            pages=[entry["page"] for entry in completed],
            completed_pages=completed,
            never_send=True,
        )

        def merged(event: p.Event) -> None:
            if not isinstance(event, p.Finished):
                return
            if event.reason != "done" or not event.result:
                self.notice.emit(
                    f"Could not merge the pages of {file.name} again: {event.message} "
                    "Exports still hold the data before this change.",
                    "error",
                )
                return
            document = {**event.result, **_read_facts(self.queue.file(file.id))}
            if file.status == FileStatus.CANCELLED and document.get("status") == "ok":
                document["status"] = "partial"  # cancelled before every page was read
            self.queue.set_document(file.id, document)
            self.document_changed.emit(file.id)

        self._send(command, merged)

    def export(self, fmt: str, path: Path) -> bool:
        documents = self.queue.documents(self.batch_id) if self.batch_id else []
        if not documents:
            self.notice.emit("Nothing to export yet: no file has a result.", "warning")
            return False
        command = px.ExportResults(
            job_id=_job_id(),
            documents=documents,
            format=fmt,  # type: ignore[arg-type]
            out_path=str(path),
        )

        def exported(event: p.Event) -> None:
            if isinstance(event, p.Finished):
                error = event.message if event.reason == "error" else ""
                self.export_finished.emit(str(path), error)

        self._send(command, exported)
        return True

    # --- schema answers -----------------------------------------------------------------------

    def _on_schemas_listed(self, event: p.Event) -> None:
        if not isinstance(event, p.Finished):
            return
        if event.reason != "done":
            self._schemas_requested = False  # ask again next time
            return
        for entry in (event.result or {}).get("schemas") or []:
            name = str(entry["name"])
            self.schemas[name] = SchemaChoice(
                name, str(entry.get("title") or name), entry["schema"]
            )
        self.schema = self.schemas.get(self.schema.key, self.schema)
        self.schemas_changed.emit()

    def _on_schema_checked(self, event: p.Event, key: str, *, inline: bool) -> None:
        if not isinstance(event, p.Finished):
            return
        if event.reason == "error":
            self.notice.emit(event.message, "error")
            return
        result = event.result or {}
        title = str(result.get("title") or key)
        choice = SchemaChoice(key, title, result.get("schema"), inline=inline)
        self.schemas[key] = choice
        self.schema = choice
        self.schemas_changed.emit()
        self.schema_checked.emit(choice)


def _same_reading(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two batches' settings read documents alike: a schema's title (the engine's
    list may word it anew after the batch began) is not part of that."""
    return {**a, "schema_title": ""} == {**b, "schema_title": ""}


def _job_id() -> str:
    return uuid.uuid4().hex


def _read_facts(file: QueuedFile | None) -> dict[str, Any]:
    """What a document says about its file, which a merge of stored pages cannot know."""
    document = (file.document if file else None) or {}
    return {
        key: document[key] for key in ("file", "sha256", "page_count", "format") if key in document
    }
