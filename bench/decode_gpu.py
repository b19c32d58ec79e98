"""Local decode speed on a GPU: plain ``generate`` against each faster path, one run per shape.

    python bench/decode_gpu.py [--shapes llava-1.5-7b qwen2-vl-7b] [--tokens 256]
    python bench/decode_gpu.py --tiny llava --device cpu      # a quick smoke run of the script
    python bench/decode_gpu.py --paths torchao_int4           # add torchao's int4 beside NF4

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
  token only; the same follow-up prefilled eagerly is reported beside it);
- ``engine_fused``: ``engine_graph`` with RMSNorm and rotary compiled (``fuse_small_ops``);
- ``torchao_int4`` (only when asked for with ``--paths``; needs torchao): torchao's int4
  weight-only format instead of NF4, in the engine's loop with CUDA graphs.

``--paths`` measures some of them; an earlier run's other paths on this GPU stay in the JSON.

Time to first token and decode tokens/s over ``--tokens`` new tokens (``min_new_tokens`` forces
the full length), and the peak memory of each path: the most its tensors took ("peak") and the
most the allocator held from the device ("held", which also counts the CUDA graphs' pools). The
ratio columns compare decode speed with the baseline and with the memory-bandwidth limit: weight
bytes read once per token at the copy bandwidth this GPU measures. Prints a table; writes JSON
to ``bench/results/``.
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
    """Start a path's peaks from what it holds now: cached blocks an earlier path freed go back
    to the device (live graphs keep their pools)."""
    import torch

    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int:
    import torch

    return int(torch.cuda.max_memory_allocated()) if device == "cuda" else 0


def _reserved(device: str) -> int:
    """The most the caching allocator held from the device: tensors, its cached free blocks,
    and the CUDA graphs' memory pools, which a replay uses without allocating (so the peak of
    allocated bytes misses their activations)."""
    import torch

    return int(torch.cuda.max_memory_reserved()) if device == "cuda" else 0


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
        "peak_reserved_bytes": _reserved(device),
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

    backend.decoder.reserve(backend.decoder.room_for(prompt, tokens))
    warm_started = time.perf_counter()
    # Warm-up: kernels, any compilation, and on CUDA the captures, as the engine's own warm-up
    # does: the first run captures the image encoder and the decode step and writes the fresh
    # cache eagerly, the second captures the first turn's prefill.
    run(8)
    run(8)
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
        "peak_reserved_bytes": _reserved(device),
        "cache_capacity": decoder.capacity,
        "graph_steps": decoder.steps_replayed,
        "graph_error": decoder.graph_error,
        "prefill_bucket": decoder.prefill_bucket,
        "prefills_replayed": decoder.prefills_replayed,
        "prefill_error": decoder.prefill_error,
        "visions_replayed": decoder.visions_replayed,
        "vision_error": decoder.vision_error,
    }


def time_follow_up(backend: Any, image: str, device: str) -> dict:
    """Turn 2 of a conversation, after the engine's own warm-up (as the app runs it when a model
    loads), measured on the second conversation (the first one warms the kernels that short
    prefills use); the first conversation's turn 2 is reported as cold, and a third one
    prefills its follow-up eagerly (as on a GPU before follow-ups were captured) for
    comparison. Turn 1 is timed through ``chat``, the picture's preprocessing included."""
    from engine.backends.local_hf import use_static_decode

    backend.set_static_decode(use_static_decode(device))
    backend.warm_up()
    cold = _conversation(backend, image, device, "What is in the picture?")
    warm = _conversation(backend, image, device, "Describe this image.")
    warm["cold_ttft_s"] = cold["ttft_s"]
    decoder = backend.decoder
    if decoder is not None:
        warm.update(
            chunk=decoder.chunk, chunks_replayed=decoder.chunks_replayed,
            chunk_error=decoder.chunk_error, prefills_replayed=decoder.prefills_replayed,
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
        "peak_reserved_bytes": _reserved(device),
    }


def _flush(rows: dict) -> None:
    """Each path's numbers as soon as they exist (a long run may be cut short)."""
    name, row = next(reversed(rows.items()))
    print(f"  {name}: {json.dumps(row, default=str)}", flush=True)


NF4_PATHS = ("plain", "static_cache", "engine_eager", "engine_graph", "turn2", "engine_fused")
PATHS = (*NF4_PATHS, "torchao_int4")


def run_shape(
    name: str,
    workdir: Path,
    tokens: int,
    device: str,
    tiny: str | None,
    paths: tuple[str, ...] = NF4_PATHS,
    keep: bool = False,
) -> dict:
    import torch
    from PIL import Image

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
    rows: dict[str, dict] = {}
    shape: dict[str, Any] = {"shape": tiny or name, "paths": rows}
    if any(path in paths for path in NF4_PATHS):
        shape["weight_bytes"] = run_nf4(folder, image, tokens, device, paths, rows)
    if "torchao_int4" in paths:  # its own process state: after every NF4 path
        rows["torchao_int4"] = time_torchao(folder, image, tokens, device)
        _flush(rows)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    if not tiny and not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return shape


def first_turn(backend: Any, image: Path) -> Any:
    """The measured request's inputs: one picture and a short question."""
    from engine import protocol as p

    return backend.build_inputs(
        [p.ChatMessage(role="user", text="Describe this image.", images=[str(image)])]
    )


def run_nf4(
    folder: Path, image: Path, tokens: int, device: str, paths: tuple[str, ...], rows: dict
) -> int:
    """The NF4 paths of ``paths`` (bitsandbytes, the engine's default format) into ``rows``;
    the model's weight bytes."""
    from engine.backends.local_hf import LocalHFBackend
    from engine.runtime import LoadSpec

    backend = LocalHFBackend.load(LoadSpec(model=str(folder), quant="nf4", device=device))
    weight_bytes = int(backend.model.get_memory_footprint())
    inputs = first_turn(backend, image)
    backend.set_static_decode(False)
    measures = {
        "plain": lambda: time_generate(backend, inputs, tokens, device),
        "static_cache": lambda: time_generate(
            backend, inputs, tokens, device, cache_implementation="static"
        ),
        "engine_eager": lambda: time_engine(backend, inputs, tokens, device, graphs=False),
        "engine_graph": lambda: time_engine(backend, inputs, tokens, device, graphs=True),
        "turn2": lambda: time_follow_up(backend, str(image), device),  # the engine's default
        # Last: compiling patches the model's family for this process.
        "engine_fused": lambda: time_engine(backend, inputs, tokens, device, True, fuse=True),
    }
    for path, measure in measures.items():
        if path in paths and (device == "cuda" or path not in ("engine_eager", "engine_fused")):
            rows[path] = measure()
            _flush(rows)
    backend.close()
    return weight_bytes


def time_torchao(folder: Path, image: Path, tokens: int, device: str) -> dict:
    """torchao's int4 weight-only format (tinygemm kernels, group size 128) in the engine's loop
    with CUDA graphs: the other well-kept 4-bit path, measured beside NF4. The model is loaded
    in bf16 through the engine's loader and its linear layers (all but the output head, as
    bitsandbytes does) quantised in place. Without CUDA a CPU layout of the same int4 weights
    stands in, so a smoke run covers the code. A failure is a row with its error."""
    import torch
    from torchao.quantization import Int4WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    from engine.backends.local_hf import LocalHFBackend
    from engine.runtime import LoadSpec

    group = 128 if device == "cuda" else 32
    if device == "cuda":
        config: Any = Int4WeightOnlyConfig(
            group_size=group, int4_packing_format="tile_packed_to_4d"
        )
    else:
        config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group))
    backend = None
    try:
        backend = LocalHFBackend.load(LoadSpec(model=str(folder), quant="none", device=device))
        quantize_(
            backend.model,
            config,
            filter_fn=lambda module, name: (
                isinstance(module, torch.nn.Linear)
                and not name.endswith("lm_head")
                and module.in_features % group == 0
            ),
        )
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
            weight_bytes = int(torch.cuda.memory_allocated())  # everything resident: the model
        else:
            weight_bytes = int(backend.model.get_memory_footprint())
        inputs = first_turn(backend, image)
        row = time_engine(backend, inputs, tokens, device, graphs=True)
        row.update(weight_bytes=weight_bytes, quantisation=f"torchao int4 weight-only, g{group}")
        return row
    except Exception as exc:  # a measurement, not a product path: say what failed
        return {"ttft_s": None, "decode_tokens_per_s": None, "peak_bytes": 0,
                "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
    finally:
        if backend is not None:
            backend.close()


def _torchao_missing() -> str | None:
    """Why torchao's int4 path cannot be measured here, or None."""
    try:
        import torchao.quantization  # noqa: F401
    except Exception as exc:  # not installed, or built for another torch
        return f"torchao does not import ({type(exc).__name__}: {exc})"
    return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "bitsandbytes", "torchao"):
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
        "--paths",
        nargs="+",
        default=list(NF4_PATHS),
        choices=PATHS,
        help="what to measure (default: the NF4 paths; torchao_int4 needs torchao); rows of "
        "the other paths from an earlier run on this GPU stay in the JSON",
    )
    parser.add_argument(
        "--workdir", default=None, help="keep the random-weight models here for other benchmarks"
    )
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/decode_gpu.py needs a CUDA GPU (or --tiny F --device cpu).", file=sys.stderr)
        return 2
    if "torchao_int4" in args.paths and (missing := _torchao_missing()):
        print(f"torchao_int4 left out: {missing}", file=sys.stderr)
        args.paths.remove("torchao_int4")
        if not args.paths:
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
    header = f"{'shape':<16}{'path':<14}{'ttft ms':>9}{'tok/s':>9}{'x base':>8}{'% bw':>7}{'peak GiB':>10}{'held GiB':>10}"
    print(f"{gpu}; copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    print(header)
    try:
        for name in shapes:
            report["shapes"].append(
                run_shape(
                    name,
                    workdir,
                    args.tokens,
                    args.device,
                    args.tiny,
                    paths=tuple(args.paths),
                    keep=bool(args.workdir),
                )
            )
            result = save(Path(args.out), report)
            _print_shape(result["shapes"][-1])
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def save(out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Write ``report`` with the other paths and shapes of an earlier run on this GPU, every
    path compared with plain ``generate`` and with the bandwidth limit; what was written."""
    from bench.report import merged, write

    result = merged(out, report, rows="shapes", key="shape", gpu="device", nested="paths")
    bandwidth = report["copy_bandwidth_bytes_per_s"]
    for shape in result["shapes"]:
        base = shape["paths"].get("plain", {}).get("decode_tokens_per_s")
        for row in shape["paths"].values():
            rate = row.get("decode_tokens_per_s")
            # The limit: every weight byte read once per token, at the measured copy bandwidth.
            weights = row.get("weight_bytes") or shape.get("weight_bytes")
            row["ratio_to_plain"] = rate / base if rate and base else None
            row["fraction_of_bandwidth_limit"] = (
                rate * weights / bandwidth if rate and weights else None
            )
    write(out, result)
    return result


def _print_shape(shape: dict[str, Any]) -> None:
    for path, row in shape["paths"].items():
        print(
            f"{shape['shape']:<16}{path:<14}{(row.get('ttft_s') or 0) * 1e3:>9.1f}"
            f"{row.get('decode_tokens_per_s') or 0:>9.1f}{row['ratio_to_plain'] or 0:>8.2f}"
            f"{(row['fraction_of_bandwidth_limit'] or 0) * 100:>7.1f}"
            f"{row.get('peak_bytes', 0) / 2**30:>10.2f}"
            f"{(row.get('peak_reserved_bytes') or 0) / 2**30:>10.2f}"
            + ("  (earlier run)" if row.get("earlier_run") else "")
            + (f"  {row['error']}" if row.get("error") else "")
        )


if __name__ == "__main__":
    sys.exit(main())
