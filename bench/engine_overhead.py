"""Tokens/s through the engine process versus direct ``model.generate``, same model, one run.

    python bench/engine_overhead.py [--family llava] [--quant nf4] [--tokens 256] [--repeats 5]

Both sides load the same tiny model (NF4 on the CPU by default), use the same prompt and image
and greedy decoding, so they produce the same tokens. The engine side is timed from the moment
the command is written to its pipe until its ``finished`` event arrives, so it includes image
loading, the processor, streaming, JSON encoding and the pipe. Prints a table; writes JSON.
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

from engine import protocol as p  # noqa: E402
from engine.runtime import LoadSpec  # noqa: E402
from tests.engine.harness import EngineHarness, job_id  # noqa: E402


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
    image = Path(tempfile.mkdtemp()) / "bench.png"
    Image.new("RGB", (64, 48), (120, 60, 30)).save(image)
    messages = [p.ChatMessage(role="user", text="Describe this image.", images=[str(image)])]
    sampling = p.Sampling(max_new_tokens=args.tokens)

    # Direct: the same loading code, then plain generate with no streamer and no IPC.
    direct = LocalHFBackend.load(LoadSpec(model=model_dir, quant=args.quant, device="cpu"))
    inputs = direct.build_inputs(messages)
    kwargs = direct.generation_kwargs(sampling)

    def run_direct() -> tuple[float, int]:
        started = time.perf_counter()
        with torch.inference_mode():
            output = direct.model.generate(**inputs, **kwargs)
        return time.perf_counter() - started, int(output.shape[-1] - inputs["input_ids"].shape[-1])

    engine = EngineHarness()
    chat = dict(messages=messages, model=model_dir, quant=args.quant, device="cpu", sampling=sampling)
    engine.run(p.Chat(job_id=job_id(), **chat))  # load + warm up

    def run_engine() -> tuple[float, int]:
        started = time.perf_counter()
        finished, _ = engine.run(p.Chat(job_id=job_id(), **chat))
        assert finished.result is not None, finished.message
        return time.perf_counter() - started, int(finished.result["completion_tokens"])

    run_direct()  # warm up
    direct_rates, engine_rates = [], []
    for _ in range(args.repeats):  # interleaved, so drift affects both sides alike
        seconds, tokens = run_direct()
        direct_rates.append(tokens / seconds)
        seconds, engine_tokens = run_engine()
        engine_rates.append(engine_tokens / seconds)
        assert engine_tokens == tokens, "both sides must generate the same number of tokens"
    engine.close()

    direct_tps, engine_tps = statistics.median(direct_rates), statistics.median(engine_rates)
    ratio = engine_tps / direct_tps
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
        "torch_threads": torch.get_num_threads(),
    }
    print(f"{'path':<10}{'tokens/s':>12}")
    print(f"{'direct':<10}{direct_tps:>12.1f}")
    print(f"{'engine':<10}{engine_tps:>12.1f}")
    print(f"ratio engine/direct = {ratio:.3f} (target >= 0.95), {tokens} new tokens, median of {args.repeats}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
