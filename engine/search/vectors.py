"""Nearest vectors: exact (one matrix product) for small collections, faiss IVF above a threshold.

Exact search over ``n`` normalised vectors costs one ``n × d`` product per query, about 10 ms per
100 000 vectors of 512 floats on one core. Past ``ANN_THRESHOLD`` an inverted-file index takes
over: faiss ``IndexIVFScalarQuantizer`` (vectors in 8 bits, so scanning a list reads a quarter of
the bytes) finds candidates in the few lists nearest the query, and the candidates are re-ranked
with the full float vectors, so the scores returned are exact. After building, the number of
lists scanned is calibrated against exact search on queries near and farther from stored
vectors (text queries sit farther from images than images from each other), until recall@20
reaches ``TARGET_RECALL`` for both kinds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ANN_THRESHOLD = 100_000  # vectors; below this exact search is fast enough and always right
TARGET_RECALL = 0.96
CALIBRATION_QUERIES = 48
RERANK = 4  # candidates per wanted result, re-scored with the full vectors

Rerank = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def exact_top_k(
    matrix: np.ndarray, query: np.ndarray, k: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers and scores of the ``k`` rows most similar to ``query``, best first."""
    scores = matrix @ query if rows is None else matrix[rows] @ query
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(k)
    top = top[np.argsort(-scores[top], kind="stable")]
    found = top if rows is None else rows[top]
    return found.astype(np.int64), scores[top].astype(np.float32)


@dataclass
class AnnMeta:
    generation: int
    trained_n: int
    nprobe: int
    nlist: int
    dimension: int


class AnnIndex:
    """A faiss IVF index (8-bit vectors) over int64 ids; finds candidates, not final scores."""

    def __init__(self, index: Any, ids: np.ndarray, meta: AnnMeta) -> None:
        self.index = index
        self.ids = np.sort(ids.astype(np.int64))
        self.meta = meta

    @classmethod
    def build(
        cls, ids: np.ndarray, matrix: np.ndarray, rerank: Rerank, generation: int = 0
    ) -> AnnIndex:
        import faiss

        n, dimension = matrix.shape
        # 4·√n lists: a million vectors make 4000 lists of ~250, and a query scans a few hundred.
        # (Not more lists than 40 training vectors each: k-means needs that many.)
        nlist = max(16, min(int(4 * math.sqrt(n)), n // 40))
        quantizer = faiss.IndexFlatIP(dimension)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dimension, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = 10  # the centroids only route queries; the lists are scanned in full
        sample = np.random.default_rng(0).choice(n, size=min(n, nlist * 40), replace=False)
        index.train(np.ascontiguousarray(matrix[np.sort(sample)]))
        index.add_with_ids(np.ascontiguousarray(matrix), ids.astype(np.int64))
        ann = cls(index, ids, AnnMeta(generation, n, max(1, nlist // 64), nlist, dimension))
        ann.calibrate(ids, matrix, rerank)
        return ann

    def candidates(self, query: np.ndarray, count: int) -> np.ndarray:
        """Ids of about ``count`` vectors near ``query`` (approximate order)."""
        self.index.nprobe = self.meta.nprobe
        _, ids = self.index.search(np.ascontiguousarray(query[None, :], dtype=np.float32), count)
        return ids[0][ids[0] >= 0].astype(np.int64)

    def calibrate(self, ids: np.ndarray, matrix: np.ndarray, rerank: Rerank, k: int = 20) -> None:
        """The fewest lists (``nprobe``) that give the target recall@k, near and far from the data."""
        rng = np.random.default_rng(1)
        count = min(CALIBRATION_QUERIES, matrix.shape[0])
        picks = rng.choice(matrix.shape[0], size=count, replace=False)
        noise = rng.standard_normal((count, matrix.shape[1])).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        near = np.arange(count) % 2 == 0
        queries = matrix[picks] + np.where(near, 0.8, 1.4)[:, None].astype(np.float32) * noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        truth = [set(ids[exact_top_k(matrix, query, k)[0]].tolist()) for query in queries]

        def good_enough(nprobe: int) -> bool:
            self.meta.nprobe = nprobe
            found = [set(rerank(self.candidates(q, RERANK * k), q, k)[0].tolist()) for q in queries]
            recalls = np.array([len(t & f) / k for t, f in zip(truth, found, strict=True)])
            return min(recalls[near].mean(), recalls[~near].mean()) >= TARGET_RECALL

        # Double until good enough, then narrow down between the last two tries.
        low, high = 0, self.meta.nprobe
        while high < self.meta.nlist and not good_enough(high):
            low, high = high, min(self.meta.nlist, high * 2)
        while high - low > max(1, high // 8):
            middle = (low + high) // 2
            low, high = (low, middle) if good_enough(middle) else (middle, high)
        self.meta.nprobe = high
        log.info("ANN: %d of %d lists scanned per query", high, self.meta.nlist)

    def update(self, ids: np.ndarray, matrix: np.ndarray, generation: int) -> None:
        """Add vectors that are new and drop ids that are gone (vectors never change in place)."""
        wanted = ids.astype(np.int64)
        new_rows = np.flatnonzero(~np.isin(wanted, self.ids, assume_unique=True))
        gone = np.setdiff1d(self.ids, wanted, assume_unique=True)
        if gone.size:
            self.index.remove_ids(gone)
        if new_rows.size:
            self.index.add_with_ids(np.ascontiguousarray(matrix[new_rows]), wanted[new_rows])
        self.ids = np.sort(wanted)
        self.meta.generation = generation

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        import faiss

        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        faiss.write_index(self.index, str(temporary))
        temporary.replace(path)
        np.save(path.with_suffix(".ids.npy"), self.ids)
        path.with_suffix(".json").write_text(json.dumps(self.meta.__dict__))

    @classmethod
    def load(cls, path: Path) -> AnnIndex | None:
        import faiss

        try:
            meta = AnnMeta(**json.loads(path.with_suffix(".json").read_text()))
            ids = np.load(path.with_suffix(".ids.npy"))
            index = faiss.read_index(str(path))
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            log.info("no usable ANN index at %s (%s)", path, exc)
            return None
        return cls(index, ids, meta)


class VectorIndex:
    """The vectors of one model, in memory (rows sorted by id), with an ANN index when large."""

    def __init__(
        self,
        ids: np.ndarray,
        matrix: np.ndarray,
        generation: int = 0,
        ann_threshold: int = ANN_THRESHOLD,
        ann_path: Path | None = None,
    ) -> None:
        order = np.argsort(ids, kind="stable")
        sorted_already = bool(np.all(order == np.arange(len(order))))
        self.ids = ids.astype(np.int64) if sorted_already else ids[order].astype(np.int64)
        self.matrix = np.ascontiguousarray(
            matrix if sorted_already else matrix[order], dtype=np.float32
        )
        self.generation = generation
        self.ann_threshold = ann_threshold
        self.ann_path = ann_path
        self.ann: AnnIndex | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def uses_ann(self) -> bool:
        return len(self) >= self.ann_threshold

    def rows_of(self, content_ids: np.ndarray) -> np.ndarray:
        """Row numbers of ids that are here (ids not here are dropped)."""
        rows = np.searchsorted(self.ids, content_ids)
        rows = np.minimum(rows, max(0, len(self) - 1))
        return rows[self.ids[rows] == content_ids] if len(self) else rows[:0]

    def row_of(self, content_id: int) -> int | None:
        rows = self.rows_of(np.array([content_id], dtype=np.int64))
        return int(rows[0]) if rows.size else None

    def rerank(
        self, candidates: np.ndarray, query: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of ``candidates`` (ids) by exact score: ids and scores, best first."""
        rows, scores = exact_top_k(self.matrix, query, k, self.rows_of(candidates))
        return self.ids[rows], scores

    def ensure_ann(self, previous: AnnIndex | None = None) -> AnnIndex:
        """Load, update or build the ANN index for this generation of the vectors."""
        if self.ann is not None:
            return self.ann
        ann = previous
        if ann is None and self.ann_path is not None:
            ann = AnnIndex.load(self.ann_path)
        if ann is not None and (
            ann.meta.dimension != self.matrix.shape[1] or len(self) > 2 * ann.meta.trained_n
        ):
            ann = None  # another model shape, or the collection doubled: train afresh
        began = time.monotonic()
        if ann is None:
            ann = AnnIndex.build(self.ids, self.matrix, self.rerank, self.generation)
        elif ann.meta.generation != self.generation:
            ann.update(self.ids, self.matrix, self.generation)
        else:
            self.ann = ann
            return ann
        log.info("ANN index for %d vectors ready in %.1f s", len(self), time.monotonic() - began)
        self.ann = ann
        if self.ann_path is not None:
            ann.save(self.ann_path)
        return ann

    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        exact: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Content ids and scores, best first, and whether the search was exact.

        ``allowed`` is a boolean mask over the rows (tag and folder filters): with the ANN
        index, more candidates are fetched and filtered; a narrow filter searches exactly.
        """
        query = np.asarray(query, dtype=np.float32)
        use_ann = self.uses_ann if exact is None else not exact
        if use_ann and (allowed is None or allowed.mean() > 0.5):
            candidates = self.ensure_ann().candidates(
                query, RERANK * k * (1 if allowed is None else 2)
            )
            if allowed is not None:
                rows = self.rows_of(candidates)
                candidates = self.ids[rows[allowed[rows]]]
            ids, scores = self.rerank(candidates, query, k)
            if ids.shape[0] >= min(k, len(self) if allowed is None else int(allowed.sum())):
                return ids, scores, False
        subset = None if allowed is None else np.flatnonzero(allowed).astype(np.int64)
        found, scores = exact_top_k(self.matrix, query, k, subset)
        return self.ids[found], scores, True
