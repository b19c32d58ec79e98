"""Image-search jobs: index folders, query, status, zero-shot tags, thumbnails, forget folders.

The work lives in ``engine.search``; here each command becomes a job with its checks first (a
missing folder or an empty query fails before any model loads), progress events and cancel.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgspec

from engine import protocol as p
from engine.core import Job
from engine.errors import BadInput, EngineError
from engine.protocol import search as ps
from engine.runtime import Runtime

Register = Callable[[type, Callable[..., Any]], None]
Outcome = dict[str, Any] | tuple[p.FinishReason, dict[str, Any]]


def register_search(register: Register) -> None:
    register(ps.IndexFolders, run_index)
    register(ps.SearchQuery, run_query)
    register(ps.SearchStatus, run_status)
    register(ps.TagImages, run_tag)
    register(ps.GetThumbnails, run_thumbnails)
    register(ps.RemoveFolders, run_remove)


def _store(data_dir: str, must_exist: bool = False) -> Any:
    from engine.search.store import IndexStore, index_path

    if not data_dir:
        raise BadInput("The command names no data folder for the search index.")
    path = index_path(data_dir)
    if must_exist and not path.is_file():
        raise EngineError(
            "Nothing is indexed yet. Index a folder first (visiondesk search index FOLDER "
            "--model MODEL, or Add folder… in the Search view).",
            ps.SearchErrorCode.NO_INDEX,
        )
    return IndexStore(path)


@contextmanager
def _encoder(model: str, quant: str, device: str, job: Job, **consent: bool) -> Iterator[Any]:
    from engine.search.encoder import Encoder

    job.progress("loading", message=f"Loading {model}")
    with Encoder.lease(model, quant=quant, device=device, **consent) as encoder:
        yield encoder


def _model_row(store: Any, name: str | None) -> Any:
    from engine.search.encoder import model_key

    row = store.model(model_key(name)) if name else store.last_used_model()
    if row is None:
        raise EngineError(
            f"Nothing is indexed with {name} yet; index a folder with it first."
            if name
            else "Nothing is indexed yet. Index a folder first.",
            ps.SearchErrorCode.NO_INDEX,
        )
    return row


def run_index(job: Job, command: ps.IndexFolders, runtime: Runtime) -> Outcome:
    from engine.search.indexer import IndexOptions, IndexRun
    from engine.search.query import vectors_for
    from engine.search.tagging import tag_contents
    from engine.search.walker import normalise_folder

    if command.batch_size < 1 or command.workers < 0:
        raise BadInput("The batch size must be at least 1 and the worker count not negative.")
    with ExitStack() as stack, _store(command.data_dir) as store:
        folders = [normalise_folder(folder) for folder in command.folders]
        for folder in folders:
            if not Path(folder).is_dir():
                raise BadInput(f"Folder not found: {folder}")
        gone: list[str] = []
        if not folders:
            # Updating every folder: one that is gone (deleted, or on a drive not mounted now)
            # is left out, with its entries kept, so that the other folders still update.
            known = [path for path, _, _ in store.folders()]
            folders = [path for path in known if Path(path).is_dir()]
            gone = [path for path in known if path not in folders]
        if not folders and gone:
            raise BadInput(
                f"No indexed folder can be found ({'; '.join(gone)}). Reconnect its drive, or "
                "remove it from the index (visiondesk search forget FOLDER, or Folders in the "
                "Search view)."
            )
        if not folders:
            raise BadInput("Name a folder to index.")
        encoder = stack.enter_context(
            _encoder(
                command.model,
                command.quant,
                command.device,
                job,
                allow_pickle=command.allow_pickle,
                trust_remote_code=command.trust_remote_code,
            )
        )
        options = IndexOptions(
            folders=list(dict.fromkeys(folders)),
            pdf_pages=command.pdf_pages,
            workers=command.workers,
            batch_size=command.batch_size,
            trust_remote_code=command.trust_remote_code,
        )
        try:
            run = IndexRun(store, encoder, options, job)
        except ValueError as exc:  # the model's vector size changed under the same name
            raise BadInput(str(exc)) from exc
        reason, result = run.run()
        result["gone"] = [{"path": folder, "items": store.items_in(folder)} for folder in gone]
        if reason == "done":
            result["tagged"] = tag_contents(store, encoder, run.model, only_untagged=True)
            vectors = vectors_for(store, run.model)
            if vectors.uses_ann:  # built (or updated) now, so that the next query is quick
                job.progress("ann", message=f"Updating the search index for {len(vectors)} images")
                vectors.ensure_ann()
        return reason, result  # type: ignore[return-value]


def run_query(job: Job, command: ps.SearchQuery, runtime: Runtime) -> dict[str, Any]:
    from engine.search.query import Filters, allowed_mask, combine, hits_for, vectors_for
    from engine.search.walker import normalise_folder

    text = command.text.strip()
    if not text and not command.image:
        raise BadInput("Type something to search for, or give an image.")
    if command.top_k < 1:
        raise BadInput("Ask for at least one result (top_k ≥ 1).")
    if command.image and not Path(command.image).is_file():
        raise BadInput(f"Image not found: {command.image}")
    began = time.monotonic()
    with ExitStack() as stack, _store(command.data_dir, must_exist=True) as store:
        model = _model_row(store, command.model)
        encoder = stack.enter_context(_encoder(model.name, command.quant, command.device, job))
        job.progress("searching", message="Searching")
        image_vector = encoder.encode_image_files([command.image])[0] if command.image else None
        text_vector = encoder.encode_texts([text])[0] if text else None
        query = combine(image_vector, text_vector, command.text_weight)
        index = vectors_for(store, model)
        indexed = [path for path, _, _ in store.folders()]
        gone = [path for path in indexed if not Path(path).is_dir()]
        filters = Filters(command.tags, [normalise_folder(f) for f in command.folders], gone)
        _require_indexed(filters.folders, indexed)
        allowed = None
        if filters:
            try:
                allowed = allowed_mask(store, model, index, filters)
            except KeyError as exc:
                raise BadInput(
                    f"No tag {exc.args[0]!r} for this model; tag the images with it first."
                ) from exc
        searched = time.monotonic()
        # A few more than asked: a vector whose files were just removed yields no hit.
        ids, scores, exact = index.search(query, command.top_k + 16, allowed, command.exact)
        search_ms = (time.monotonic() - searched) * 1000
        hits = hits_for(store, model, ids, scores, command.top_k, gone)
        with store.transaction():
            store.touch_model(model.id)
    return {
        "hits": [msgspec.to_builtins(hit) for hit in hits],
        "model": model.name,
        "exact": exact,
        "vectors": len(index),
        "search_ms": round(search_ms, 3),
        "elapsed_ms": round((time.monotonic() - began) * 1000, 1),
    }


def _require_indexed(folders: list[str], indexed: list[str]) -> None:
    """A folder filter must overlap the index: a mistyped path finds nothing, and says so."""
    for folder in folders:
        if not any(_overlap(Path(folder), Path(known)) for known in indexed):
            known = "; ".join(indexed) or "none yet"
            raise BadInput(f"{folder} is not in the index (indexed folders: {known}).")


def _overlap(one: Path, other: Path) -> bool:
    return one.is_relative_to(other) or other.is_relative_to(one)


def run_status(job: Job, command: ps.SearchStatus, runtime: Runtime) -> dict[str, Any]:
    from engine.search.store import index_path

    path = index_path(command.data_dir)
    if not path.is_file():
        empty = ps.SearchIndexStatus(str(path), [], [], 0, [], 0)
        return {"status": msgspec.to_builtins(empty)}
    with _store(command.data_dir) as store:
        db = store.db

        def count(sql: str, *args: Any) -> int:
            return int(db.execute(sql, args).fetchone()[0])

        folders = [
            ps.IndexedFolder(
                path=folder,
                items=store.items_in(folder),
                last_indexed_at=last,
                pdf_pages="all" if pages == "all" else "first",
                gone=not Path(folder).is_dir(),
            )
            for folder, last, pages in store.folders()
        ]
        models = [
            ps.IndexedModel(
                name=str(name),
                model_type=str(model_type),
                dimension=int(dimension),
                vectors=count("SELECT COUNT(*) FROM vectors WHERE model_id = ?", model_id),
                last_used_at=last_used,
                labels=[
                    str(row[0])
                    for row in db.execute(
                        "SELECT label FROM labels WHERE model_id = ? ORDER BY rowid", (model_id,)
                    )
                ],
            )
            for model_id, name, model_type, dimension, last_used in db.execute(
                "SELECT id, name, model_type, dimension, last_used_at FROM models "
                "ORDER BY last_used_at DESC"
            ).fetchall()
        ]
        skipped = [
            ps.SkippedFile(path=str(row[0]), reason=str(row[1]), folder=str(row[2]))
            for row in db.execute(
                "SELECT path, reason, folder FROM skipped ORDER BY path LIMIT ?",
                (max(0, command.skipped_limit),),
            )
        ]
        status = ps.SearchIndexStatus(
            path=str(path),
            folders=folders,
            models=models,
            items=count("SELECT COUNT(*) FROM items"),
            skipped=skipped,
            skipped_total=count("SELECT COUNT(*) FROM skipped"),
        )
    return {"status": msgspec.to_builtins(status)}


def run_tag(job: Job, command: ps.TagImages, runtime: Runtime) -> Outcome:
    from engine.search.tagging import check_labels, set_labels, tag_contents

    labels, templates = check_labels(command.labels, command.templates)
    with ExitStack() as stack, _store(command.data_dir, must_exist=True) as store:
        model = _model_row(store, command.model)
        encoder = stack.enter_context(_encoder(model.name, command.quant, command.device, job))
        _, bias = encoder.logit_scale_and_bias()
        set_labels(store, model, labels, templates, command.threshold, bias is not None)

        def progress(done: int, total: int) -> None:
            job.progress("tagging", done, total, f"Scored {done}/{total} images")

        scored = tag_contents(
            store, encoder, model, cancelled=lambda: job.cancelled, progress=progress
        )
        counts = {
            str(label): int(count)
            for label, count in store.db.execute(
                "SELECT l.label, COUNT(t.content_id) FROM labels l LEFT JOIN tags t ON "
                "t.model_id = l.model_id AND t.label = l.label AND t.score >= l.threshold "
                "WHERE l.model_id = ? GROUP BY l.label ORDER BY l.rowid",
                (model.id,),
            )
        }
        threshold = store.db.execute(
            "SELECT threshold FROM labels WHERE model_id = ? LIMIT 1", (model.id,)
        ).fetchone()[0]
    result = {
        "model": model.name,
        "labels": labels,
        "threshold": float(threshold),
        "scoring": "sigmoid" if bias is not None else "softmax",
        "images": scored,
        "tagged": counts,
    }
    return ("cancelled", result) if job.cancelled else result


def run_thumbnails(job: Job, command: ps.GetThumbnails, runtime: Runtime) -> dict[str, Any]:
    if len(command.ids) > 1000:
        raise BadInput("Ask for at most 1000 thumbnails at a time.")
    with _store(command.data_dir, must_exist=True) as store:
        found = store.thumbnails(list(command.ids))
    return {"thumbnails": {str(k): base64.b64encode(v).decode("ascii") for k, v in found.items()}}


def run_remove(job: Job, command: ps.RemoveFolders, runtime: Runtime) -> dict[str, Any]:
    from engine.search.query import forget
    from engine.search.walker import normalise_folder

    with _store(command.data_dir, must_exist=True) as store:
        known = {path for path, _, _ in store.folders()}
        removed = 0
        with store.transaction():
            for folder in command.folders:
                path = normalise_folder(folder)
                if path not in known:
                    raise BadInput(f"{path} is not an indexed folder.")
                removed += store.remove_folder(path)
            store.delete_contents(store.orphan_content_ids())
            store.bump_generation()
        forget(store.path)
    return {"removed": removed, "folders": [normalise_folder(f) for f in command.folders]}
