"""Index throughput: decode+resize alone versus the full index (decode, embed, write), one run.

    python bench/index_throughput.py [--images 480] [--size 1024x768] [--shape tiny]
                                     [--device cpu] [--workers 0] [--batch-size 32] [--rounds 3]

Both measurements use the same JPEG files (generated photos, documents, charts… with
sensor-like grain, so they decode like camera files) and the same decode processes: first the
processes alone (read, hash, decode, thumbnail, the model's own preprocessing), then the real
index run (the same, plus the model and the SQLite writes), alternating for a few rounds so that
other load on the machine hits both alike; the medians are compared. With a model that is not the
bottleneck — the tiny one on the CPU — the full index should reach at least 85 % of the
decode-only rate: the model runs while the processes go on decoding. Start-up of the processes
is timed apart and left out of both rates.

``--shape vit-b-32`` or ``--shape vit-l-14`` builds a random-weight CLIP of that shape (224 px,
patch 32 or 14; 151 M or 428 M parameters) for GPU runs: ``--device cuda``. The model-only rate
(embedding preprocessed batches, no decoding) is printed too, to show which side limits.
Prints a table; writes JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.search.decode import FileTask, WorkerConfig
from engine.search.pipeline import DecodePool, default_workers
from engine.search.samples import write_samples

SHAPES: dict[str, dict[str, Any]] = {
    "vit-b-32": {
        "text": {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "num_hidden_layers": 12,
            "intermediate_size": 2048,
        },
        "vision": {
            "hidden_size": 768,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "intermediate_size": 3072,
            "patch_size": 32,
        },
        "projection_dim": 512,
    },
    "vit-l-14": {
        "text": {
            "hidden_size": 768,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "intermediate_size": 3072,
        },
        "vision": {
            "hidden_size": 1024,
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
            "intermediate_size": 4096,
            "patch_size": 14,
        },
        "projection_dim": 768,
    },
}


def build_model(shape: str, folder: Path) -> Path:
    """The tiny test CLIP, or a random-weight CLIP of a real shape (tokenizer from the tiny one)."""
    from engine.testing import tiny_model_path

    tiny = tiny_model_path("clip")
    if shape == "tiny":
        return tiny
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    spec = SHAPES[shape]
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tiny_text = CLIPConfig.from_pretrained(tiny).text_config
    config = CLIPConfig(
        text_config={
            **spec["text"],
            "vocab_size": tiny_text.vocab_size,
            "max_position_embeddings": 77,
            "bos_token_id": tiny_text.bos_token_id,
            "eos_token_id": tiny_text.eos_token_id,
            "pad_token_id": tiny_text.pad_token_id,
        },
        vision_config={**spec["vision"], "image_size": 224},
        projection_dim=spec["projection_dim"],
    )
    model = CLIPModel(
        config
    ).half()  # random weights; fp16 on disk, as the engine loads them on a GPU
    path = folder / f"clip-{shape}"
    model.save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(path)
    return path


class Quiet:
    cancelled = False

    def progress(
        self, stage: str, current: float = 0.0, total: float | None = None, message: str = ""
    ) -> None:
        pass

    def partial(self, data: dict[str, Any]) -> None:
        pass


def decode_only(
    config: WorkerConfig, files: list[Path], workers: int, in_flight: int
) -> dict[str, float]:
    began = time.monotonic()
    pool = DecodePool(config, workers, max_in_flight=in_flight)
    started = time.monotonic()
    for path in files:
        pool.add(FileTask(str(path), "image"))
    done = errors = 0
    while not pool.idle:
        for prepared in pool.take(timeout=1.0):
            done += 1
            errors += bool(prepared.error)
    elapsed = time.monotonic() - started
    pool.close(wait=True)  # its processes must be gone before the next measurement starts
    assert errors == 0 and done == len(files)
    return {"startup_s": started - began, "seconds": elapsed, "images_per_s": done / elapsed}


def full_index(
    model: Path, folder: Path, data: Path, device: str, workers: int, batch: int
) -> dict[str, Any]:
    from engine.search.encoder import Encoder
    from engine.search.indexer import IndexOptions, IndexRun
    from engine.search.store import IndexStore

    encoder = Encoder.load(str(model), device=device)
    with IndexStore.open(data) as store:
        options = IndexOptions(folders=[str(folder)], workers=workers, batch_size=batch)
        reason, result = IndexRun(store, encoder, options, Quiet()).run()
    for child in multiprocessing.active_children():  # the pool does not wait for its processes
        child.join(60)
    assert reason == "done" and result["skipped"] == 0
    return result


def model_only(model: Path, files: list[Path], device: str, batch: int) -> float:
    """Images/s of the model alone on preprocessed batches (the decode side taken out)."""
    import numpy as np
    from transformers import AutoImageProcessor

    from engine.documents.images import load_image
    from engine.search.encoder import Encoder

    encoder = Encoder.load(str(model), device=device)
    processor = AutoImageProcessor.from_pretrained(model)
    sample = [load_image(path) for path in files[:batch]]
    pixels = np.asarray(processor(images=sample, return_tensors="np")["pixel_values"])
    encoder.encode_pixels(pixels)  # warm-up (CUDA kernels, allocator)
    rounds = max(2, len(files) // batch)
    began = time.monotonic()
    for _ in range(rounds):
        encoder.encode_pixels(pixels)
    _sync(device)
    return rounds * len(sample) / (time.monotonic() - began)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--shape", default="tiny", choices=["tiny", *SHAPES])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="0: one per CPU core")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    workers = args.workers or default_workers()
    work = Path(tempfile.mkdtemp(prefix="visiondesk-bench-"))
    try:
        print(f"writing {args.images} JPEGs of {width}x{height} …", file=sys.stderr)
        files = write_samples(work / "photos", args.images, size=(width, height))
        model = build_model(args.shape, work)
        from engine.search.encoder import Encoder
        from engine.search.indexer import THUMB_SIDE

        side = Encoder.load(str(model), device=args.device).image_side
        config = WorkerConfig(
            str(model), max(2 * side, THUMB_SIDE), THUMB_SIDE, max(2 * side, 2 * THUMB_SIDE)
        )
        in_flight = 2 * args.batch_size
        decodes: list[dict[str, float]] = []
        indexes: list[dict[str, Any]] = []
        # Alternating rounds, so that load from other programs hits both sides alike.
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}: decode only …", file=sys.stderr)
            decodes.append(decode_only(config, files, workers, in_flight))
            print(f"round {round_ + 1}/{args.rounds}: full index …", file=sys.stderr)
            data = work / f"data-{round_}"
            indexes.append(
                full_index(model, work / "photos", data, args.device, workers, args.batch_size)
            )
        print("model only …", file=sys.stderr)
        model_rate = model_only(model, files, args.device, args.batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    decode_rates = [d["images_per_s"] for d in decodes]
    index_rates = [i["images_per_s"] for i in indexes]
    ratio = statistics.median(index_rates) / statistics.median(decode_rates)
    print(
        f"\n{args.images} images {width}x{height}, {args.shape} CLIP on {args.device}, "
        f"{workers} decode processes, batch {args.batch_size}, {args.rounds} rounds"
    )
    print(f"{'':36}{'median':>9}{'rounds (images/s)':>30}")
    for name, rates in (
        ("decode + resize only", decode_rates),
        ("full index (decode, embed, write)", index_rates),
    ):
        print(f"{name:36}{statistics.median(rates):9.1f}   {'  '.join(f'{r:7.1f}' for r in rates)}")
    print(f"{'model only (preprocessed batches)':36}{model_rate:9.1f}")
    print(
        f"start-up of the decode processes: {statistics.median(d['startup_s'] for d in decodes):.1f} s (not in the rates)"
    )
    print(
        f"full index / decode only: {ratio:.1%}  (target ≥ 85 % when the model is not the bottleneck)"
    )
    report = {
        "images": args.images,
        "size": [width, height],
        "shape": args.shape,
        "device": args.device,
        "workers": workers,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "decode_only_images_per_s": [round(rate, 2) for rate in decode_rates],
        "full_index_images_per_s": [round(rate, 2) for rate in index_rates],
        "model_only_images_per_s": round(model_rate, 2),
        "ratio_full_to_decode": round(ratio, 4),
        "startup_s": round(statistics.median(d["startup_s"] for d in decodes), 2),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": default_workers(),
        },
        "gpu": _gpu_name(args.device),
    }
    out = Path(args.out or f"bench/results/index_throughput-{args.shape}-{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


def _gpu_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return str(torch.cuda.get_device_name(0))


if __name__ == "__main__":
    sys.exit(main())
