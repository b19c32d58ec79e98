"""An incremental index run: walk, decide what changed, decode in parallel, embed, commit.

What is done again on a re-run is only what changed: a file whose size and mtime match its
entry (and whose content has a vector for this model) is left alone; a file whose bytes hash to
a content already embedded — a renamed, moved, copied or merely touched file — is linked to it
without running the model; files gone from disk are dropped. Each batch is one transaction, so
an interrupted run (cancel, crash, kill) keeps everything it committed and the next run goes on
from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.search.decode import FileTask, PageTask, Prepared, WorkerConfig, content_key
from engine.search.encoder import Encoder
from engine.search.pipeline import DecodePool, InlineDecoder, default_workers, make_pool
from engine.search.store import IndexStore, ItemRow
from engine.search.walker import Candidate, Skip, walk

log = logging.getLogger(__name__)

THUMB_SIDE = 192
LARGE_MODEL_PARAMETERS = 20_000_000
REPORT_EVERY_S = 0.5


class Reporter(Protocol):
    @property
    def cancelled(self) -> bool: ...

    def progress(
        self, stage: str, current: float = 0.0, total: float | None = None, message: str = ""
    ) -> None: ...

    def partial(self, data: dict[str, Any]) -> None: ...


@dataclass
class IndexOptions:
    folders: list[str]  # normalised (see walker.normalise_folder)
    pdf_pages: str = "first"
    workers: int = 0
    batch_size: int = 32
    thumb_side: int = THUMB_SIDE
    trust_remote_code: bool = False


@dataclass
class IndexReport:
    model: str
    folders: list[str]
    found: int = 0  # indexable files seen by the walk
    unchanged: int = 0
    embedded: int = 0  # images and pages that went through the model
    reused: int = 0  # renamed, copied or touched files linked to vectors already stored
    removed: int = 0  # files gone from disk, dropped from the index
    skipped: int = 0
    tasks: int = 0  # files and pages handed to the decoders
    startup_s: float = 0.0  # starting the decode processes
    index_s: float = 0.0  # decoding, embedding and writing
    images_per_s: float = 0.0
    run_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


@dataclass
class _Pending:
    """One content waiting for the model, and every file that shows it."""

    prepared: Prepared
    items: list[tuple[Candidate, Prepared]]


class IndexRun:
    def __init__(
        self, store: IndexStore, encoder: Encoder, options: IndexOptions, reporter: Reporter
    ) -> None:
        self.store = store
        self.encoder = encoder
        self.options = options
        self.reporter = reporter
        dimension = int(encoder.encode_texts(["a photo"]).shape[1])
        with store.transaction():
            self.model = store.ensure_model(encoder.name, encoder.model_type, dimension)
            for folder in options.folders:
                store.add_folder(folder, options.pdf_pages)
            self.run_id = store.start_run(self.model.id)
        self.report = IndexReport(model=encoder.name, folders=options.folders, run_id=self.run_id)
        self._candidates: dict[str, Candidate] = {}
        self._batch: dict[str, _Pending] = {}
        self._writes: list[Callable[[], None]] = []  # links and skips, committed with a batch
        self._done = 0
        self._total = 0
        self._last_report = 0.0
        self._started = 0.0

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> tuple[str, dict[str, Any]]:
        tasks, known = self._plan()
        self.report.tasks = self._total = len(tasks)
        cancelled = self.reporter.cancelled
        if tasks and not cancelled:
            cancelled = not self._decode_and_embed(tasks, known)
        if not cancelled:
            with self.store.transaction():
                orphans = self.store.orphan_content_ids()
                if orphans:  # vectors no file uses any more: kept until now for renames
                    self.store.delete_contents(orphans)
                    self.store.bump_generation()
                for folder in self.options.folders:
                    self.store.mark_indexed(folder)
        with self.store.transaction():
            self.store.finish_run(self.run_id, "cancelled" if cancelled else "done")
        if self.report.index_s > 0:
            self.report.images_per_s = round(self._done / self.report.index_s, 2)
        return ("cancelled" if cancelled else "done"), self.report.as_dict()

    def _plan(self) -> tuple[list[FileTask | PageTask], frozenset[str]]:
        """Walk every folder and write what the walk alone decides (removals, walk skips)."""
        tasks: list[FileTask | PageTask] = []
        maybe_known: set[int] = set(self.store.orphan_content_ids())
        with_vectors = self.store.content_ids_with_vectors(self.model.id)
        for folder in self.options.folders:
            found: list[Candidate] = []
            skips: list[Skip] = []
            for entry in walk(folder, lambda: self.reporter.cancelled):
                if isinstance(entry, Candidate):
                    found.append(entry)
                else:
                    skips.append(entry)
                if (len(found) + len(skips)) % 500 == 0:
                    self.reporter.progress(
                        "scanning", len(found), None, f"Found {len(found)} files"
                    )
            if self.reporter.cancelled:
                return [], frozenset()
            self.report.found += len(found)
            self.reporter.progress("scanning", len(found), None, f"Found {len(found)} files")
            with self.store.transaction():
                tasks += self._plan_folder(folder, found, skips, with_vectors, maybe_known)
        known = self.store.keys_with_vectors(maybe_known, self.model.id)
        return tasks, frozenset(known)

    def _plan_folder(
        self,
        folder: str,
        found: list[Candidate],
        skips: list[Skip],
        with_vectors: set[int],
        maybe_known: set[int],
    ) -> list[FileTask | PageTask]:
        store = self.store
        existing = store.items_under(folder)
        seen = {candidate.path for candidate in found}
        gone = [row for path, rows in existing.items() if path not in seen for row in rows]
        maybe_known.update(row.content_id for row in gone)
        self.report.removed += len({row.path for row in gone})
        store.delete_items(row.id for row in gone)
        # Skips: walk problems are found again every time; a file that failed to decode is
        # retried only once it changed (size, mtime, or ctime, which a chmod moves).
        previous = store.skipped_under(folder)
        stats = {c.path: (c.size, c.mtime_ns, c.ctime_ns) for c in found}
        keep = {
            path
            for path, (stage, *stat) in previous.items()
            if stage == "decode" and stats.get(path) == tuple(stat)
        }
        store.delete_skipped(p for p in previous if p not in keep)
        for skip in skips:
            store.put_skipped(skip.path, folder, "walk", skip.reason)
        self.report.skipped += len(skips) + len(keep)
        tasks: list[FileTask | PageTask] = []
        for candidate in found:
            if candidate.path in keep or candidate.path in self._candidates:
                continue  # still unreadable, or already planned through an overlapping folder
            rows = existing.get(candidate.path, [])
            todo = self._todo(candidate, rows, with_vectors, maybe_known)
            if todo:
                self._candidates[candidate.path] = candidate
                tasks += todo
            else:
                self.report.unchanged += 1
        return tasks

    def _todo(
        self,
        candidate: Candidate,
        rows: list[ItemRow],
        with_vectors: set[int],
        maybe_known: set[int],
    ) -> list[FileTask | PageTask]:
        same = bool(rows) and all(
            row.size == candidate.size and row.mtime_ns == candidate.mtime_ns for row in rows
        )
        if not same:
            maybe_known.update(row.content_id for row in rows)  # perhaps only touched
            return [FileTask(candidate.path, candidate.kind)]
        by_page = {row.page: row for row in rows}
        pages = range(rows[0].pages) if self._all_pages(candidate) else range(1)
        extra = [row.id for row in rows if row.page not in pages]
        if extra:  # from an earlier "all pages" run; now only the first page is wanted
            self.store.delete_items(extra)
        missing = [
            page
            for page in pages
            if page not in by_page or by_page[page].content_id not in with_vectors
        ]
        if not missing:
            return []
        if 0 in missing:
            return [FileTask(candidate.path, candidate.kind)]  # later pages follow from it
        return [PageTask(candidate.path, rows[0].hash, page) for page in missing]

    def _all_pages(self, candidate: Candidate) -> bool:
        return candidate.kind == "pdf" and self.options.pdf_pages == "all"

    # -- decoding and embedding ----------------------------------------------------------------
    def _decode_and_embed(self, tasks: list[FileTask | PageTask], known: frozenset[str]) -> bool:
        """False if cancelled. Committed batches stay either way."""
        side = self.encoder.image_side
        config = WorkerConfig(
            processor_path=self.encoder.folder,
            draft_side=max(2 * side, self.options.thumb_side),
            thumb_side=self.options.thumb_side,
            pdf_side=max(2 * side, 2 * self.options.thumb_side),
            known=known,
            trust_remote_code=self.options.trust_remote_code,
        )
        batch_size = max(1, self.options.batch_size)
        self.reporter.progress("starting", 0, len(tasks), "Starting the image decoders")
        began = time.monotonic()
        workers, model_threads = self._share_cores()
        pool = make_pool(config, workers, tasks, 2 * batch_size, inline=self.options.workers == 0)
        if isinstance(pool, InlineDecoder):
            model_threads = 0  # decoding happens on this thread, between model calls
        with pool, self.encoder.threads(model_threads) if model_threads else nullcontext():
            self.report.startup_s = round(time.monotonic() - began, 3)
            self._started = time.monotonic()
            for task in tasks:
                pool.add(task)
            while not pool.idle:
                if self.reporter.cancelled:
                    self._commit(embed=False)
                    break
                for prepared in pool.take(timeout=0.25):
                    self._accept(prepared, pool)
                if len(self._batch) >= batch_size or len(self._writes) >= 256 or pool.idle:
                    self._commit(embed=True)
                self._report()
            else:
                self._commit(embed=True)
            self.report.index_s = round(time.monotonic() - self._started, 3)
            self._report(force=True)
        return not self.reporter.cancelled

    def _share_cores(self) -> tuple[int, int]:
        """Decode processes, and the model's CPU threads (0: leave torch's own choice).

        On a GPU the decoders get every core. On the CPU a real model (tens of millions of
        parameters and up) is the slow side: it keeps most cores and a quarter decode. A small
        model needs little: the decoders get every core and the model one thread.
        """
        cores = default_workers()
        if self.options.workers:
            workers = self.options.workers
        elif self.encoder.on_cpu and self.encoder.parameters >= LARGE_MODEL_PARAMETERS:
            workers = max(1, cores // 4)
        else:
            workers = cores
        return workers, (max(1, cores - workers) if self.encoder.on_cpu else 0)

    def _accept(self, prepared: Prepared, pool: DecodePool | InlineDecoder) -> None:
        self._done += 1
        candidate = self._candidates[prepared.path]
        if prepared.error:
            self.report.skipped += 1
            self._writes.append(
                lambda: self.store.put_skipped(
                    candidate.path,
                    candidate.folder,
                    "decode",
                    prepared.error,
                    candidate.size,
                    candidate.mtime_ns,
                    candidate.ctime_ns,
                )
            )
            return
        if prepared.page == 0 and self._all_pages(candidate):
            for page in range(1, prepared.pages):
                if not self._embedded(content_key(prepared.hash, page)):
                    pool.add(PageTask(candidate.path, prepared.hash, page))
                    self._total += 1
        key = content_key(prepared.hash, prepared.page)
        if key in self._batch:
            self._batch[key].items.append((candidate, prepared))
            return
        if prepared.known or self._embedded(key):
            self.report.reused += 1
            self._writes.append(lambda: self._link(candidate, prepared))
            return
        self._batch[key] = _Pending(prepared, [(candidate, prepared)])

    def _embedded(self, key: str) -> bool:
        content_id = self.store.content_id(key)
        return content_id is not None and self.store.has_vector(content_id, self.model.id)

    def _link(self, candidate: Candidate, prepared: Prepared) -> None:
        content_id = self.store.content_id(content_key(prepared.hash, prepared.page))
        assert content_id is not None
        self._put_item(candidate, prepared, content_id)

    def _put_item(self, candidate: Candidate, prepared: Prepared, content_id: int) -> None:
        self.store.put_item(
            candidate.path,
            prepared.page,
            candidate.folder,
            candidate.kind,
            candidate.size,
            candidate.mtime_ns,
            prepared.hash,
            prepared.pages,
            content_id,
        )

    def _commit(self, embed: bool) -> None:
        batch, self._batch = (self._batch, {}) if embed else ({}, self._batch)
        writes, self._writes = self._writes, []
        if not batch and not writes:
            return
        vectors = None
        if batch:
            pixels = np.stack([pending.prepared.pixels for pending in batch.values()])
            vectors = self.encoder.encode_pixels(pixels)
        with self.store.transaction():
            for write in writes:
                write()
            for row, (key, pending) in enumerate(batch.items()):
                first = pending.prepared
                content_id = self.store.add_content(key, first.width, first.height, first.thumbnail)
                assert vectors is not None
                self.store.put_vector(
                    content_id, self.model.id, vectors[row].tobytes(), self.run_id
                )
                for candidate, prepared in pending.items:
                    self._put_item(candidate, prepared, content_id)
            if batch:
                self.store.bump_generation([self.model.id])
        self.report.embedded += len(batch)
        self.report.reused += sum(len(p.items) - 1 for p in batch.values())
        self._report(force=bool(batch))

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < REPORT_EVERY_S:
            return
        self._last_report = now
        elapsed = max(now - self._started, 1e-6)
        rate = self._done / elapsed
        eta = (self._total - self._done) / rate if rate > 0 else None
        message = f"{self._done}/{self._total} files · {rate:.0f}/s"
        if eta is not None and self._done < self._total:
            message += f" · about {_duration(eta)} left"
        self.reporter.progress("indexing", self._done, self._total, message)
        self.reporter.partial(
            {
                "done": self._done,
                "total": self._total,
                "embedded": self.report.embedded,
                "reused": self.report.reused,
                "skipped": self.report.skipped,
                "rate": round(rate, 2),
                "eta_s": round(eta, 1) if eta is not None else None,
            }
        )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
