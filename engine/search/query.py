"""Answering a query from the index: vectors in memory per model, filters, and hits with paths.

The vectors of a model are read from SQLite once and kept while the model's *generation* (bumped
by every change to its vectors) stays the same; the ANN index, when there is one, is updated
rather than rebuilt when the vectors change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.protocol.search import SearchHit
from engine.search.store import IndexStore, ModelRow
from engine.search.vectors import ANN_THRESHOLD, VectorIndex

_lock = threading.Lock()
_loaded: dict[tuple[str, int], VectorIndex] = {}


def vectors_for(
    store: IndexStore, model: ModelRow, ann_threshold: int = ANN_THRESHOLD
) -> VectorIndex:
    """The model's vectors in memory, reloaded when they changed on disk."""
    key = (str(store.path), model.id)
    generation = store.generation(model.id)
    with _lock:
        cached = _loaded.get(key)
        if cached is not None and cached.generation == generation:
            return cached
        rows = store.db.execute(
            "SELECT content_id, vector FROM vectors WHERE model_id = ? ORDER BY content_id",
            (model.id,),
        ).fetchall()
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
        matrix = (
            matrix.reshape(len(rows), model.dimension)
            if rows
            else np.zeros((0, model.dimension), np.float32)
        )
        ann_path = Path(store.path).parent / f"ann-model{model.id}.faiss"
        index = VectorIndex(ids, matrix, generation, ann_threshold, ann_path)
        if cached is not None and cached.ann is not None and index.uses_ann:
            index.ensure_ann(previous=cached.ann)  # update the one in memory, not from disk
        _loaded[key] = index
        return index


def forget(store_path: Path) -> None:
    with _lock:
        for key in [key for key in _loaded if key[0] == str(store_path)]:
            _loaded.pop(key)


@dataclass
class Filters:
    tags: list[str]
    folders: list[str]
    # Indexed folders that are gone from disk: their files cannot be opened, so they are left
    # out of the results (their entries stay, for a drive that is only unmounted).
    gone: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tags or self.folders or self.gone)


def allowed_mask(
    store: IndexStore, model: ModelRow, index: VectorIndex, filters: Filters
) -> np.ndarray:
    """Rows of ``index`` whose content carries every tag and lives under one of the folders."""
    allowed = np.ones(len(index), dtype=bool)
    for label in filters.tags:
        threshold = _threshold(store, model.id, label)
        rows = store.db.execute(
            "SELECT content_id FROM tags WHERE model_id = ? AND label = ? AND score >= ?",
            (model.id, label, threshold),
        ).fetchall()
        allowed &= _mask(index, (int(row[0]) for row in rows))
    if filters.folders:
        clauses = " OR ".join("substr(path, 1, ?) = ?" for _ in filters.folders)
        prefixes = [folder.rstrip("/\\") + "/" for folder in filters.folders]
        args: list[object] = []
        for prefix in prefixes:
            args += [len(prefix), prefix]
        cursor = store.db.execute(f"SELECT DISTINCT content_id FROM items WHERE {clauses}", args)
        allowed &= _mask(index, (int(row[0]) for row in cursor))
    if filters.gone:
        marks = ",".join("?" * len(filters.gone))
        cursor = store.db.execute(
            f"SELECT DISTINCT content_id FROM items WHERE folder NOT IN ({marks})", filters.gone
        )
        allowed &= _mask(index, (int(row[0]) for row in cursor))
    return allowed


def _threshold(store: IndexStore, model_id: int, label: str) -> float:
    row = store.db.execute(
        "SELECT threshold FROM labels WHERE model_id = ? AND label = ?", (model_id, label)
    ).fetchone()
    if row is None:
        raise KeyError(label)
    return float(row[0])


def _mask(index: VectorIndex, content_ids: Iterable[int]) -> np.ndarray:
    mask = np.zeros(len(index), dtype=bool)
    mask[index.rows_of(np.fromiter(content_ids, dtype=np.int64))] = True
    return mask


def hits_for(
    store: IndexStore,
    model: ModelRow,
    ids: np.ndarray,
    scores: np.ndarray,
    k: int,
    gone: Iterable[str] = (),
) -> list[SearchHit]:
    """Content ids and scores → hits with their files; contents no file shows are left out,
    and so are files of the ``gone`` folders (see ``Filters.gone``)."""
    hidden = set(gone)
    hits: list[SearchHit] = []
    for content_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
        rows = store.db.execute(
            "SELECT i.path, i.page, i.folder, c.width, c.height FROM items i "
            "JOIN contents c ON c.id = i.content_id WHERE i.content_id = ? ORDER BY i.path",
            (content_id,),
        ).fetchall()
        rows = [row for row in rows if row[2] not in hidden]
        if not rows:
            continue  # its files were removed (the vector goes at the end of the next run)
        tags = [
            str(row[0])
            for row in store.db.execute(
                "SELECT t.label FROM tags t JOIN labels l ON l.model_id = t.model_id "
                "AND l.label = t.label WHERE t.content_id = ? AND t.model_id = ? "
                "AND t.score >= l.threshold ORDER BY t.score DESC",
                (content_id, model.id),
            )
        ]
        path, page, folder, width, height = rows[0]
        hits.append(
            SearchHit(
                id=int(content_id),
                path=str(path),
                page=int(page),
                score=round(float(score), 6),
                width=int(width),
                height=int(height),
                folder=str(folder),
                tags=tags,
                duplicates=[str(row[0]) for row in rows[1:]],
            )
        )
        if len(hits) >= k:
            break
    return hits


def combine(image: np.ndarray | None, text: np.ndarray | None, text_weight: float) -> np.ndarray:
    """One query vector: the image, the text, or the image moved towards the text."""
    if image is None and text is None:
        raise ValueError("nothing to search for")
    if image is None:
        vector = text
    elif text is None:
        vector = image
    else:
        weight = min(1.0, max(0.0, text_weight))
        vector = (1.0 - weight) * image + weight * text
    assert vector is not None
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)
