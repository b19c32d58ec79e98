"""Top-20 search latency over synthetic normalised vectors: exact versus the ANN index, with recall.

    python bench/search_latency.py [--sizes 10000,100000] [--dim 512] [--queries 100]
    python bench/search_latency.py --sizes 10000,100000,1000000     # the 1M row (~10 min, 6 GB)

The vectors imitate image embeddings: a shared direction, clusters, and noise (random pairs have
a cosine near 0.3, as CLIP image vectors do). Half the queries are image-like (image → similar
images), half sit off the image distribution, as text queries do in CLIP's joint space (the
"modality gap") and which is the harder case for an inverted-file index. Every query is timed
alone (one query at a time, as a person searches); recall@20 is measured against exact search.
The ANN index is the one the engine uses (``engine.search.vectors``: faiss IVF-Flat, lists
scanned calibrated for recall); the engine switches to it at ``ANN_THRESHOLD`` vectors.
Prints a table; writes JSON to ``bench/results/search_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.search.vectors import ANN_THRESHOLD, VectorIndex, exact_top_k


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


class Synthetic:
    """Clustered vectors around a shared direction; text-like queries shifted off them."""

    def __init__(self, dimension: int, clusters: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dimension = dimension
        self.common = unit(rng.standard_normal(dimension))
        self.gap = unit(rng.standard_normal(dimension))
        self.centres = unit(rng.standard_normal((clusters, dimension)))

    def images(self, count: int, seed: int) -> np.ndarray:
        out = np.empty((count, self.dimension), dtype=np.float32)
        for start in range(0, count, 100_000):  # in chunks: 1M × 512 floats is 2 GB already
            rng = np.random.default_rng(seed * 7919 + start)
            n = min(100_000, count - start)
            noise = unit(rng.standard_normal((n, self.dimension)))
            centres = self.centres[rng.integers(0, len(self.centres), n)]
            out[start : start + n] = unit(0.7 * self.common + 0.7 * centres + 0.8 * noise)
        return out

    def texts(self, count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        noise = unit(rng.standard_normal((count, self.dimension)))
        centres = self.centres[rng.integers(0, len(self.centres), count)]
        return unit(0.9 * self.gap + 0.4 * self.common + 0.5 * centres + 0.6 * noise)


def timed(search: object, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    latencies, results = [], []
    for query in queries:
        began = time.perf_counter()
        found = search(query)  # type: ignore[operator]
        latencies.append((time.perf_counter() - began) * 1000)
        results.append(found)
    return latencies, results


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_size(data: Synthetic, size: int, queries: int, k: int) -> dict[str, object]:
    began = time.monotonic()
    vectors = data.images(size, seed=size)
    generate_s = time.monotonic() - began
    ids = np.arange(size, dtype=np.int64)
    index = VectorIndex(ids, vectors, ann_threshold=0)  # always build the ANN index here
    asked = np.concatenate(
        [data.images(queries // 2, seed=1), data.texts(queries - queries // 2, seed=2)]
    )

    exact_ms, truth = timed(lambda q: exact_top_k(vectors, q, k)[0], asked)
    began = time.monotonic()
    ann = index.ensure_ann()
    build_s = time.monotonic() - began
    index.search(asked[0], k)  # warm-up
    ann_ms, found = timed(lambda q: index.search(q, k)[0], asked)
    recalls = [
        len(set(t.tolist()) & set(f.tolist())) / k for t, f in zip(truth, found, strict=True)
    ]
    half = queries // 2
    return {
        "vectors": size,
        "engine_uses": "ann" if size >= ANN_THRESHOLD else "exact",
        "exact_ms_median": round(statistics.median(exact_ms), 3),
        "exact_ms_p95": round(percentile(exact_ms, 0.95), 3),
        "ann_ms_median": round(statistics.median(ann_ms), 3),
        "ann_ms_p95": round(percentile(ann_ms, 0.95), 3),
        "recall_at_k": round(float(np.mean(recalls)), 4),
        "recall_image_queries": round(float(np.mean(recalls[:half])), 4),
        "recall_text_queries": round(float(np.mean(recalls[half:])), 4),
        "recall_min": round(float(np.min(recalls)), 4),
        "ann_build_s": round(build_s, 2),
        "nlist": ann.meta.nlist,
        "nprobe": ann.meta.nprobe,
        "generate_s": round(generate_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated vector counts")
    parser.add_argument("--dim", type=int, default=512, help="512: ViT-B/32, 768: ViT-L/14")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--out", default="bench/results/search_latency.json")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = []
    for size in sizes:
        data = Synthetic(args.dim, clusters=max(100, size // 100))
        print(f"{size} vectors …", file=sys.stderr)
        rows.append(run_size(data, size, args.queries, args.k))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"\ntop-{args.k} over {args.dim}-d normalised vectors, {args.queries} queries one at a time, {cores} CPU cores"
    )
    header = f"{'vectors':>9} {'exact ms':>9} {'ANN ms':>8} {'ANN p95':>8} {'recall@k':>9} {'text q':>7} {'nprobe/nlist':>13} {'build s':>8}"
    print(header)
    for row in rows:
        print(
            f"{row['vectors']:>9} {row['exact_ms_median']:>9.2f} {row['ann_ms_median']:>8.2f} "
            f"{row['ann_ms_p95']:>8.2f} {row['recall_at_k']:>9.3f} {row['recall_text_queries']:>7.3f} "
            f"{str(row['nprobe']) + '/' + str(row['nlist']):>13} {row['ann_build_s']:>8.1f}"
        )
    print(
        f"the engine searches exactly below {ANN_THRESHOLD} vectors; target at 1M: ≤ 50 ms, recall@20 ≥ 0.95"
    )
    report = {
        "k": args.k,
        "dimension": args.dim,
        "queries": args.queries,
        "ann_threshold": ANN_THRESHOLD,
        "rows": rows,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": cores,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
