"""Local decode speed on a GPU: plain ``generate`` against each faster path, one run per shape.

    python bench/decode_gpu.py [--shapes llava-1.5-7b qwen2-vl-7b] [--tokens 256]
    python bench/decode_gpu.py --tiny llava --device cpu      # a quick smoke run of the script

For each real shape (random bf16 weights, written once and loaded through the engine's own
loading code in NF4) it measures, with one 336-px-class image and a short question:

- ``plain``: ``model.generate`` with the dynamic cache (the baseline);
- ``static_cache``: the same with ``cache_implementation="static"``;
- ``engine_eager``: the engine's own static-cache loop (``engine.backends.static_decode``)
  with every step run eagerly;
- ``engine_graph``: the same loop with the decode step replayed as a CUDA graph (the engine's
  default on NVIDIA GPUs), streaming through the engine's incremental detokeniser;
- ``turn2``: a short follow-up about the same image through the engine's backend, which reuses
  the conversation's KV cache and prefills the new text through a captured graph (time to first
  token only; the same follow-up prefilled eagerly is reported beside it).

Time to first token and decode tokens/s over ``--tokens`` new tokens (``min_new_tokens`` forces
the full length), and the peak memory of each path. The last columns compare decode speed with
the baseline and with the memory-bandwidth limit: weight bytes read once per token at the copy
bandwidth this GPU measures. Prints a table; writes JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a large device-to-device copy (read + write)."""
    import torch

    size = 1 << 30 if device == "cuda" else 1 << 26
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    _sync(device)
    started = time.perf_counter()
    for _ in range(5):
        target.copy_(source)
    _sync(device)
    return 2 * size * 5 / (time.perf_counter() - started)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int:
    import torch

    return int(torch.cuda.max_memory_allocated()) if device == "cuda" else 0


class _FirstToken:
    """A streamer that only notes when the first new token arrives."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.first_at: float | None = None

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
        elif self.first_at is None:
            self.first_at = time.perf_counter()

    def end(self) -> None:
        pass


def time_generate(backend: Any, inputs: Any, tokens: int, device: str, **extra: Any) -> dict:
    import torch

    from engine import protocol as p

    kwargs = backend.generation_kwargs(p.Sampling())
    kwargs.update(max_new_tokens=tokens, min_new_tokens=tokens, **extra)
    with torch.inference_mode():
        backend.model.generate(**inputs, **{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8})
    _sync(device)
    _peak_reset(device)
    firsts = []
    for _ in range(3):  # time to first token: the median of three
        streamer = _FirstToken()
        started = time.perf_counter()
        with torch.inference_mode():
            backend.model.generate(
                **inputs, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2}, streamer=streamer
            )
        firsts.append((streamer.first_at or time.perf_counter()) - started)
    streamer = _FirstToken()
    started = time.perf_counter()
    with torch.inference_mode():
        output = backend.model.generate(**inputs, **kwargs, streamer=streamer)
    _sync(device)
    ended = time.perf_counter()
    new = int(output.shape[-1] - inputs["input_ids"].shape[-1])
    first = streamer.first_at or ended
    return {
        "ttft_s": statistics.median(firsts),
        "decode_tokens_per_s": (new - 1) / (ended - first) if new > 1 and ended > first else None,
        "new_tokens": new,
        "peak_bytes": _peak(device),
    }


def time_engine(
    backend: Any, inputs: Any, tokens: int, device: str, graphs: bool, fuse: bool = False
) -> dict:
    """The engine's static-cache loop, as a chat would run it, forced to ``tokens`` new tokens."""
    import torch
    from transformers import LogitsProcessorList

    from engine import protocol as p
    from engine.backends.local_hf import Turn
    from engine.backends.streaming import CancelCriteria, IncrementalStreamer

    if not backend.set_static_decode(True, use_graphs=graphs, fuse=fuse):
        return {"ttft_s": None, "decode_tokens_per_s": None, "peak_bytes": 0, "skipped": True}
    sampling = p.Sampling(max_new_tokens=tokens)
    prompt = int(inputs["input_ids"].shape[-1])

    def run(limit: int) -> tuple[list[int], IncrementalStreamer]:
        backend.prefix_cache.clear()  # each run prefills the whole prompt, as a first turn does
        streamer = IncrementalStreamer(backend.tokenizer, lambda _text: None)
        stop = CancelCriteria(lambda: len(streamer.token_ids) >= limit)
        with torch.inference_mode():
            turn = Turn(inputs, (), sampling, LogitsProcessorList(), streamer, stop)
            new, _cached = backend._decode_static(turn, min_new_tokens=tokens)
        return new, streamer

    backend.decoder.reserve(prompt + tokens)
    warm_started = time.perf_counter()
    run(8)  # warm-up: kernels, any compilation, and on CUDA the capture of the decode step
    _sync(device)
    warm_up_s = time.perf_counter() - warm_started
    _peak_reset(device)
    firsts = []
    for _ in range(3):  # time to first token: the median of three first turns
        started = time.perf_counter()
        _new, streamer = run(1)
        firsts.append((streamer.first_token_at or time.perf_counter()) - started)
    _sync(device)
    started = time.perf_counter()
    new, streamer = run(tokens)
    _sync(device)
    ended = time.perf_counter()
    first = streamer.first_token_at or ended
    decoder = backend.decoder
    return {
        "ttft_s": statistics.median(firsts),
        "warm_up_s": warm_up_s,
        "fused": decoder.fused,
        "decode_tokens_per_s": (len(new) - 1) / (ended - first) if len(new) > 1 else None,
        "new_tokens": len(new),
        "peak_bytes": _peak(device),
        "cache_capacity": decoder.capacity,
        "graph_steps": decoder.steps_replayed,
        "graph_error": decoder.graph_error,
    }


def time_follow_up(backend: Any, image: str, device: str) -> dict:
    """Turn 2 of a conversation, measured on the second conversation (the first one warms the
    kernels that short prefills use and captures the follow-up's graph); the first
    conversation's turn 2 is reported as cold, and a third one prefills its follow-up eagerly
    (as on a GPU before follow-ups were captured) for comparison."""
    cold = _conversation(backend, image, device, "What is in the picture?")
    warm = _conversation(backend, image, device, "Describe this image.")
    warm["cold_ttft_s"] = cold["ttft_s"]
    decoder = backend.decoder
    if decoder is not None:
        warm.update(
            chunk=decoder.chunk, chunks_replayed=decoder.chunks_replayed,
            chunk_error=decoder.chunk_error,
        )  # fmt: skip
        chunk, decoder.chunk = decoder.chunk, 0
        eager = _conversation(backend, image, device, "Look at this image.")
        decoder.chunk = chunk
        warm["eager_follow_up_ttft_s"] = eager["ttft_s"]
    return warm


def _conversation(backend: Any, image: str, device: str, question: str) -> dict:
    from engine import protocol as p

    first = [p.ChatMessage(role="user", text=question, images=[image])]
    # Turn 1 sees the picture for the first time: nothing of it may come from a cache.
    backend.forget_images()
    answer = backend.chat(first, p.Sampling(max_new_tokens=32), on_text=lambda _t: None,
                          cancelled=lambda: False)  # fmt: skip
    follow_up = [*first, p.ChatMessage(role="assistant", text=answer.text),
                 p.ChatMessage(role="user", text="What colour is it?")]  # fmt: skip
    _peak_reset(device)
    result = backend.chat(follow_up, p.Sampling(max_new_tokens=8), on_text=lambda _t: None,
                          cancelled=lambda: False)  # fmt: skip
    return {
        "ttft_s": result.time_to_first_token_s,
        "turn1_ttft_s": answer.time_to_first_token_s,
        "cached_tokens": result.cached_tokens,
        "prompt_tokens": result.prompt_tokens,
        "peak_bytes": _peak(device),
    }


def _flush(rows: dict) -> None:
    """Each path's numbers as soon as they exist (a long run may be cut short)."""
    name, row = next(reversed(rows.items()))
    print(f"  {name}: {json.dumps(row, default=str)}", flush=True)


def run_shape(
    name: str,
    workdir: Path,
    tokens: int,
    device: str,
    tiny: str | None,
    keep: bool = False,
    fused: bool = True,
) -> dict:
    import torch
    from PIL import Image

    from engine.backends.local_hf import LocalHFBackend
    from engine.runtime import LoadSpec

    if tiny:
        from engine.testing import tiny_model_path

        folder, size = tiny_model_path(tiny), (64, 48)
    else:
        from bench.memory_plan_gpu import IMAGE_SIZE, _fill_random_weights, write_shaped

        folder, size = write_shaped(name, workdir / name), IMAGE_SIZE[name]
        if not list(folder.glob("*.safetensors")):
            _fill_random_weights(folder)
    image = workdir / f"{name}.png"
    Image.new("RGB", size, (90, 140, 200)).save(image)
    quant = "nf4"
    backend = LocalHFBackend.load(LoadSpec(model=str(folder), quant=quant, device=device))
    weight_bytes = int(backend.model.get_memory_footprint())
    from engine import protocol as p

    inputs = backend.build_inputs(
        [p.ChatMessage(role="user", text="Describe this image.", images=[str(image)])]
    )
    backend.set_static_decode(False)
    rows = {"plain": time_generate(backend, inputs, tokens, device)}
    _flush(rows)
    rows["static_cache"] = time_generate(
        backend, inputs, tokens, device, cache_implementation="static"
    )
    _flush(rows)
    if device == "cuda":
        rows["engine_eager"] = time_engine(backend, inputs, tokens, device, graphs=False)
        _flush(rows)
    rows["engine_graph"] = time_engine(backend, inputs, tokens, device, graphs=True)
    _flush(rows)
    rows["turn2"] = time_follow_up(backend, str(image), device)  # the engine's default loop
    _flush(rows)
    if device == "cuda" and fused:  # last: compiling patches the model for this process
        rows["engine_fused"] = time_engine(backend, inputs, tokens, device, graphs=True, fuse=True)
    backend.close()
    del backend
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    if not tiny and not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return {"shape": tiny or name, "weight_bytes": weight_bytes, "paths": rows}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "bitsandbytes"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "missing"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["llava-1.5-7b", "qwen2-vl-7b"])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", default=None, help="a tiny family instead of real shapes")
    parser.add_argument("--out", default="bench/results/decode_gpu.json")
    parser.add_argument(
        "--no-fused", action="store_true", help="skip the compiled norm/rotary variant"
    )
    parser.add_argument(
        "--workdir", default=None, help="keep the random-weight models here for other benchmarks"
    )
    args = parser.parse_args()
    import torch

    from bench.report import write_merged

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/decode_gpu.py needs a CUDA GPU (or --tiny F --device cpu).", file=sys.stderr)
        return 2
    bandwidth = copy_bandwidth(args.device)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="decode-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shapes = [args.tiny] if args.tiny else args.shapes
    report: dict[str, Any] = {
        "device": gpu,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "versions": _versions(),
        "shapes": [],
    }
    header = f"{'shape':<16}{'path':<14}{'ttft ms':>9}{'tok/s':>9}{'x base':>8}{'% bw':>7}{'peak GiB':>10}"
    print(f"{gpu}; copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    print(header)
    try:
        for name in shapes:
            shape = run_shape(
                name,
                workdir,
                args.tokens,
                args.device,
                args.tiny,
                keep=bool(args.workdir),
                fused=not args.no_fused,
            )
            limit = bandwidth / shape["weight_bytes"]
            base = shape["paths"]["plain"]["decode_tokens_per_s"]
            for path, row in shape["paths"].items():
                rate = row.get("decode_tokens_per_s")
                row["ratio_to_plain"] = rate / base if rate and base else None
                row["fraction_of_bandwidth_limit"] = rate / limit if rate else None
                print(
                    f"{shape['shape']:<16}{path:<14}{(row['ttft_s'] or 0) * 1e3:>9.1f}"
                    f"{rate or 0:>9.1f}{row['ratio_to_plain'] or 0:>8.2f}"
                    f"{(row['fraction_of_bandwidth_limit'] or 0) * 100:>7.1f}"
                    f"{row['peak_bytes'] / 2**30:>10.2f}"
                )
            report["shapes"].append(shape)
            write_merged(Path(args.out), report, rows="shapes", key="shape", gpu="device")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    write_merged(Path(args.out), report, rows="shapes", key="shape", gpu="device")
    return 0


if __name__ == "__main__":
    sys.exit(main())
