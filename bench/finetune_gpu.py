"""QLoRA training speed and memory on a GPU: a 7B-shaped LLaVA-1.5 with 576 image tokens.

    python bench/finetune_gpu.py [--batches 1 4] [--steps 12] [--workdir DIR]

Writes a LLaVA-1.5-7B-shaped model (CLIP ViT-L/14 at 336 px, so 576 image tokens, + a
Vicuna-7B-shaped language model) with random bf16 weights, and trains it through the engine's
own trainer process exactly as a person's run would: NF4 base with bf16 compute, vision tower
and projector unquantised, LoRA rank 16 on the language model + the projector, 8-bit AdamW,
gradient checkpointing. For each batch size it reports optimiser steps/s, samples/s, tokens/s
and the peak of ``torch.cuda.max_memory_allocated`` in the trainer (target: 12 GB at batch 1).
Needs a CUDA GPU and about 15 GB of free disk for the random weights. Prints a table and writes
``bench/results/finetune_gpu.json``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_BATCH1_BYTES = 12 * 1024**3
GIB = 1024**3
CAPTION = (
    "A scanned invoice from a hardware shop: the header names the shop, the table lists six items "
    "with quantities and prices, and the total at the bottom is 1,240 euros including tax."
)


def make_dataset(folder: Path, rows: int) -> Path:
    """``rows`` 336x336 pictures with long captions (the 576 image tokens dominate)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(rows):
        image = Image.new("RGB", (336, 336), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, 336, 40), fill=(30 + 7 * index % 200, 80, 160))
        for line in range(10):
            draw.rectangle(
                (16, 60 + 24 * line, 300 - 9 * (line % 4), 70 + 24 * line), fill=(200, 200, 200)
            )
        image.save(folder / f"page-{index:03d}.png")
        (folder / f"page-{index:03d}.txt").write_text(f"{CAPTION} Page {index}.", encoding="utf-8")
    return folder


def measure(model: Path, data: Path, workdir: Path, batch: int, steps: int) -> dict[str, Any]:
    from engine.finetune.plan import build_plan
    from engine.finetune.runs import create_run
    from engine.finetune.trainer_process import run_child
    from engine.protocol import finetune as pf

    settings = pf.FinetuneSettings(
        quant="nf4",
        device="cuda",
        batch_size=batch,
        grad_accum=1,
        max_steps=steps,
        eval_every=10_000,  # one "before" evaluation only: this measures training
        checkpoint_every=10_000,
        gradient_checkpointing=True,
        optimizer="adamw_8bit",
        trial_step=True,
    )
    started = time.perf_counter()
    ctx = build_plan(str(model), str(data), settings)
    run = workdir / f"run-batch{batch}"
    shutil.rmtree(run, ignore_errors=True)
    create_run(ctx, str(run), "llava-1.5-7b-shaped", settings)
    events: list[dict[str, Any]] = []
    finished = run_child(run, [], events.append, lambda: False)
    steps_seen = [e for e in events if e["event"] == "step"]
    timed = steps_seen[2:] or steps_seen  # the first steps include warm-up (kernels, allocator)
    step_s = statistics.median(1.0 / max(e["samples_per_s"] / batch, 1e-9) for e in timed)
    trial = next((e for e in events if e["event"] == "trial"), {})
    peak = max(int(e["peak_memory_bytes"]) for e in steps_seen)
    shutil.rmtree(run, ignore_errors=True)
    return {
        "batch": batch,
        "steps": finished["step"],
        "sequence_tokens": ctx.plan.longest_tokens,
        "image_tokens": ctx.plan.longest_image_tokens,
        "steps_per_s": 1.0 / step_s,
        "samples_per_s": statistics.median(e["samples_per_s"] for e in timed),
        "tokens_per_s": statistics.median(e["tokens_per_s"] for e in timed),
        "peak_bytes": peak,
        "trial_peak_bytes": int(trial.get("peak_bytes", 0)),
        "planned_bytes": ctx.plan.total_bytes,
        "data_wait_fraction": timed[-1]["data_wait_fraction"],
        "seconds": time.perf_counter() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", default="bench/results/finetune_gpu.json")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("finetune_gpu: no CUDA GPU here; this benchmark measures GPU training and needs one.")
        return 2
    from bench.memory_plan_gpu import _fill_random_weights, write_shaped
    from bench.report import write_merged

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vd-finetune-"))
    model = write_shaped("llava-1.5-7b", workdir / "llava-1.5-7b")
    if not list(model.glob("*.safetensors")):
        print("finetune_gpu: writing random bf16 weights of the 7B shape (about 14 GB)…")
        _fill_random_weights(model)
    data = make_dataset(workdir / "data", rows=max(16, 4 * max(args.batches)))
    rows: list[dict] = []
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "target_batch1_bytes": TARGET_BATCH1_BYTES,
        "rows": rows,
    }
    for batch in args.batches:  # each batch size written as soon as it is measured
        rows.append(measure(model, data, workdir, batch, args.steps))
        write_merged(Path(args.out), report, rows="rows", key="batch", gpu="gpu")
    print(
        f"GPU: {torch.cuda.get_device_name(0)}; QLoRA r16 (NF4 base, bf16 compute), gradient "
        "checkpointing, 8-bit AdamW"
    )
    print(
        f"{'batch':>5}{'tokens':>8}{'image':>7}{'steps/s':>9}{'samples/s':>11}{'tokens/s':>10}"
        f"{'peak':>9}{'planned':>9}"
    )
    for row in rows:
        print(
            f"{row['batch']:>5}{row['sequence_tokens']:>8}{row['image_tokens']:>7}"
            f"{row['steps_per_s']:>9.2f}{row['samples_per_s']:>11.2f}{row['tokens_per_s']:>10.0f}"
            f"{row['peak_bytes'] / GIB:>8.2f}G{row['planned_bytes'] / GIB:>8.2f}G"
        )
    batch1 = next((row for row in rows if row["batch"] == 1), None)
    within = batch1 is None or batch1["peak_bytes"] <= TARGET_BATCH1_BYTES
    if batch1 is not None:
        verdict = "within" if within else "OVER"
        print(f"batch 1 peak {batch1['peak_bytes'] / GIB:.2f} GB: {verdict} the 12 GB target")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
