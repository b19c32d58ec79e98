"""Nearest-vector search: exact top-k, and the faiss ANN index's recall against exact search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.search.vectors import AnnIndex, VectorIndex, exact_top_k


def clustered(n: int, dimension: int, seed: int, clusters: int = 200) -> np.ndarray:
    """Normalised vectors around cluster centres with a shared direction, as image embeddings are."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((clusters, dimension))
    common = np.random.default_rng(1).standard_normal(dimension)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    common /= np.linalg.norm(common)
    noise = rng.standard_normal((n, dimension))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = 0.7 * common + 0.7 * centres[rng.integers(0, clusters, n)] + 0.8 * noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def text_like(n: int, dimension: int, seed: int) -> np.ndarray:
    """Queries off the image distribution (the CLIP "modality gap"): the harder case for IVF."""
    rng = np.random.default_rng(seed)
    gap = np.random.default_rng(2).standard_normal(dimension)
    gap /= np.linalg.norm(gap)
    queries = (
        clustered(n, dimension, seed) * 0.6
        + 0.8 * gap
        + 0.2 * rng.standard_normal((n, dimension)) / np.sqrt(dimension)
    )
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def recall_at(index: VectorIndex, queries: np.ndarray, k: int = 20) -> float:
    hits = 0
    for query in queries:
        truth, _ = exact_top_k(index.matrix, query, k)
        found, _, exact = index.search(query, k)
        assert not exact
        hits += len(set(index.ids[truth].tolist()) & set(found.tolist()))
    return hits / (k * len(queries))


@pytest.fixture(scope="module")
def collection() -> tuple[np.ndarray, np.ndarray]:
    vectors = clustered(30_000, 128, seed=3)
    ids = np.arange(1, 30_001, dtype=np.int64) * 7  # content ids are not row numbers
    return ids, vectors


def test_exact_top_k_returns_the_best_rows_in_order() -> None:
    matrix = clustered(500, 32, seed=4)
    query = matrix[17]
    rows, scores = exact_top_k(matrix, query, 10)
    assert rows[0] == 17 and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(scores) <= 0)
    assert np.allclose(scores, matrix[rows] @ query)
    assert set(rows.tolist()) == set(np.argsort(-(matrix @ query))[:10].tolist())


def test_ann_recall_at_20_is_at_least_095_against_exact_search(
    collection: tuple[np.ndarray, np.ndarray],
) -> None:
    ids, vectors = collection
    index = VectorIndex(ids, vectors, ann_threshold=10_000)
    assert index.uses_ann
    image_queries = clustered(60, 128, seed=5)
    assert recall_at(index, image_queries) >= 0.95
    assert recall_at(index, text_like(60, 128, seed=6)) >= 0.95


def test_below_the_threshold_search_is_exact(collection: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = collection
    index = VectorIndex(ids[:5000], vectors[:5000], ann_threshold=10_000)
    found, scores, exact = index.search(vectors[42], 5)
    assert exact and found[0] == ids[42]
    assert index.ann is None  # no ANN index was built for a small collection


def test_ann_update_adds_new_and_drops_removed_vectors(
    collection: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    ids, vectors = collection
    path = tmp_path / "ann.faiss"
    first = VectorIndex(ids[:20_000], vectors[:20_000], 1, ann_threshold=10_000, ann_path=path)
    first.ensure_ann()
    assert path.is_file()
    # The next generation lost 1000 vectors and gained 10 000; the saved index is updated.
    keep = np.r_[1000:30_000]
    second = VectorIndex(ids[keep], vectors[keep], 2, ann_threshold=10_000, ann_path=path)
    ann = second.ensure_ann()
    assert ann.meta.generation == 2
    assert set(ann.ids.tolist()) == set(ids[keep].tolist())
    removed = set(ids[:1000].tolist())
    for row in (5, 500, 25_000):  # a removed vector as the query: never returned
        found, _, _ = second.search(vectors[row], 20)
        assert not removed & set(found.tolist())
    found, _, _ = second.search(vectors[25_000], 1)  # an added vector is found
    assert found[0] == ids[25_000]
    assert recall_at(second, clustered(40, 128, seed=7)) >= 0.95
    reloaded = AnnIndex.load(path)
    assert reloaded is not None and reloaded.meta.generation == 2


def test_filtered_search_returns_only_allowed_rows(
    collection: tuple[np.ndarray, np.ndarray],
) -> None:
    ids, vectors = collection
    for threshold in (10_000, 10**9):  # approximate, then exact
        index = VectorIndex(ids, vectors, ann_threshold=threshold)
        allowed = np.zeros(len(index), dtype=bool)
        allowed[::3] = True
        found, scores, _ = index.search(vectors[3], 20, allowed)
        rows = [int(np.flatnonzero(ids == i)[0]) for i in found]
        assert len(found) == 20 and all(allowed[row] for row in rows)
        assert found[0] == ids[3]
        truth, _ = exact_top_k(vectors, vectors[3], 20, np.flatnonzero(allowed))
        assert len(set(ids[truth].tolist()) & set(found.tolist())) >= 19
