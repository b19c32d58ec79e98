"""Tokens/s through the engine process versus direct ``model.generate``, same model, one run.

    python bench/engine_overhead.py [--family llava] [--quant nf4] [--tokens 256] [--repeats 5]

Both sides load the same tiny model (NF4 on the CPU by default), use the same prompt and image
and greedy decoding, so they produce the same tokens. The engine side is timed from the moment
the command is written to its pipe until its ``finished`` event arrives, so it includes image
loading, the processor, streaming, JSON encoding and the pipe. A third side runs the engine's
static-cache decode loop (``engine.backends.static_decode``, the GPU default, here eager) in
process, to show whether it would cost the CPU anything. Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import protocol as p
from engine.runtime import LoadSpec
from tests.engine.harness import EngineHarness, job_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="llava")
    parser.add_argument("--quant", default="nf4", choices=["nf4", "int8", "none"])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results/engine_overhead.json")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from engine.backends.local_hf import LocalHFBackend
    from engine.testing import tiny_model_path

    model_dir = str(tiny_model_path(args.family))
    # Two images used in turn, so the engine can never reuse the previous run's KV cache: both
    # sides do the same prefill and decode work every time.
    folder = Path(tempfile.mkdtemp())
    conversations = []
    for index, colour in enumerate([(120, 60, 30), (30, 60, 120)]):
        image = folder / f"bench{index}.png"
        Image.new("RGB", (64, 48), colour).save(image)
        conversations.append(
            [p.ChatMessage(role="user", text="Describe this image.", images=[str(image)])]
        )
    sampling = p.Sampling(max_new_tokens=args.tokens)

    # Direct: the same loading code, then plain generate with no streamer and no IPC.
    direct = LocalHFBackend.load(LoadSpec(model=model_dir, quant=args.quant, device="cpu"))
    inputs = [direct.build_inputs(messages) for messages in conversations]
    kwargs = direct.generation_kwargs(sampling)

    def run_direct(turn: int) -> tuple[float, int]:
        batch = inputs[turn % 2]
        started = time.perf_counter()
        with torch.inference_mode():
            output = direct.model.generate(**batch, **kwargs)
        return time.perf_counter() - started, int(output.shape[-1] - batch["input_ids"].shape[-1])

    # The static-cache loop in process, as the engine runs it on a GPU (eagerly here).
    static = LocalHFBackend.load(LoadSpec(model=model_dir, quant=args.quant, device="cpu"))
    static.set_static_decode(True)

    def run_static(turn: int) -> tuple[float, int]:
        static.prefix_cache.clear()
        started = time.perf_counter()
        result = static.chat(
            conversations[turn % 2], sampling, on_text=lambda _t: None, cancelled=lambda: False
        )
        return time.perf_counter() - started, result.completion_tokens

    engine = EngineHarness()
    chat = dict(model=model_dir, quant=args.quant, device="cpu", sampling=sampling)

    def run_engine(turn: int) -> tuple[float, int]:
        started = time.perf_counter()
        finished, _ = engine.run(p.Chat(job_id=job_id(), messages=conversations[turn % 2], **chat))
        assert finished.result is not None, finished.message
        assert finished.result["cached_tokens"] == 0  # no reuse: the same work as direct
        return time.perf_counter() - started, int(finished.result["completion_tokens"])

    run_engine(1)  # load + warm up
    run_direct(1)
    run_static(1)
    direct_rates, engine_rates, static_rates = [], [], []
    for turn in range(args.repeats):  # interleaved, so drift affects both sides alike
        seconds, tokens = run_direct(turn)
        direct_rates.append(tokens / seconds)
        seconds, engine_tokens = run_engine(turn)
        engine_rates.append(engine_tokens / seconds)
        assert engine_tokens == tokens, "both sides must generate the same number of tokens"
        seconds, static_tokens = run_static(turn)
        static_rates.append(static_tokens / seconds)
        assert static_tokens == tokens, "the static loop must generate the same tokens"
    engine.close()

    direct_tps, engine_tps = statistics.median(direct_rates), statistics.median(engine_rates)
    ratio = engine_tps / direct_tps
    static_tps = statistics.median(static_rates)
    report = {
        "family": args.family,
        "quant": args.quant,
        "device": "cpu",
        "new_tokens": tokens,
        "repeats": args.repeats,
        "direct_tokens_per_s": direct_tps,
        "engine_tokens_per_s": engine_tps,
        "ratio": ratio,
        "target": 0.95,
        "static_loop_tokens_per_s": static_tps,
        "static_loop_ratio": static_tps / direct_tps,
        "torch_threads": torch.get_num_threads(),
    }
    print(f"{'path':<10}{'tokens/s':>12}")
    print(f"{'direct':<10}{direct_tps:>12.1f}")
    print(f"{'engine':<10}{engine_tps:>12.1f}")
    print(
        f"{'static':<10}{static_tps:>12.1f}   (static-cache loop in process / direct = {static_tps / direct_tps:.3f})"
    )
    print(
        f"ratio engine/direct = {ratio:.3f} (target >= 0.95), {tokens} new tokens, median of {args.repeats}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
