"""The memory planner against a real GPU: planned bytes versus the measured peak, per model shape.

    python bench/memory_plan_gpu.py [--shapes llava-1.5-7b qwen2-vl-7b] [--tokens 16]

For each shape it writes a folder with a real-shaped config and processor (published sizes of
the checkpoint, a small offline tokenizer), fills it with random bf16 weights, loads it through
the engine's own loading code in NF4 on CUDA, warms it up as the engine does (capturing its
graphs), answers one image at the planned size and a follow-up, and reads
``torch.cuda.max_memory_allocated`` (peak of loading and of answering). The planner's
``allocated_bytes`` (weights + KV cache + activations, the part torch's allocator sees) is
compared with that peak; the target is within 15 %. Needs a CUDA GPU (about 20 GB of disk per
7B shape for the random weights). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 0.15
CLIP_L_336 = {
    "model_type": "clip_vision_model",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
}


def _tiny_processor(family: str, tiny: Callable[[str], Path]) -> Any:
    """The tiny family's processor: its offline tokenizer and chat template are reused."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny(family))


def llava_15_7b(tiny: Callable[[str], Path]) -> tuple[Any, Any]:
    """llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 at 336 px + Vicuna-7B (7.06 B parameters)."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaProcessor

    small = _tiny_processor("llava", tiny)
    tokenizer = small.tokenizer
    config = LlavaConfig(
        vision_config=CLIP_L_336,
        text_config=_llama_7b(tokenizer, vocab_size=32064),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=576,
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=small.chat_template,
        image_token="<image>",
    )
    return config, processor


def llava_next_7b(tiny: Callable[[str], Path]) -> tuple[Any, Any]:
    """llava-hf/llava-v1.6-mistral-7b-hf: AnyRes tiles of 336 px + Mistral-7B (7.57 B)."""
    from transformers import LlavaNextConfig, LlavaNextImageProcessor, LlavaNextProcessor

    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    small = _tiny_processor("llava_next", tiny)
    tokenizer = small.tokenizer
    text = _llama_7b(tokenizer, vocab_size=32064, intermediate_size=14336, num_key_value_heads=8)
    config = LlavaNextConfig(
        vision_config=CLIP_L_336,
        text_config={**text, "model_type": "mistral", "sliding_window": None},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": 336},
            crop_size={"height": 336, "width": 336},
            image_grid_pinpoints=pinpoints,
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=small.chat_template,
    )
    return config, processor


def qwen2_vl_7b(tiny: Callable[[str], Path]) -> tuple[Any, Any]:
    """Qwen/Qwen2-VL-7B-Instruct: 675 M ViT with 2x2 merge + Qwen2-7B (8.29 B parameters)."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    small = _tiny_processor("qwen2_vl", tiny)
    tokenizer = small.tokenizer
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in {
            "image_token_id": "<|image_pad|>",
            "video_token_id": "<|video_pad|>",
            "vision_start_token_id": "<|vision_start|>",
            "vision_end_token_id": "<|vision_end|>",
        }.items()
    }
    config = Qwen2VLConfig(
        text_config={
            "model_type": "qwen2_vl_text",
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [16, 24, 24],
            },
            "tie_word_embeddings": False,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 32,
            "embed_dim": 1280,
            "hidden_size": 3584,
            "mlp_ratio": 4,
            "num_heads": 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **ids,
    )
    sizes = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280}
    common = {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes, **common),
        video_processor=Qwen2VLVideoProcessor(**sizes, **common),
        tokenizer=tokenizer,
        chat_template=small.chat_template,
    )
    return config, processor


def idefics3_8b(tiny: Callable[[str], Path]) -> tuple[Any, Any]:
    """HuggingFaceM4/Idefics3-8B-Llama3: SigLIP 364 px tiles, pixel shuffle, Llama-3-8B."""
    from transformers import Idefics3Config, Idefics3ImageProcessor, Idefics3Processor

    small = _tiny_processor("idefics3", tiny)
    tokenizer = small.tokenizer
    text = _llama_7b(tokenizer, vocab_size=128259, intermediate_size=14336, num_key_value_heads=8)
    config = Idefics3Config(
        vision_config={
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 364,
            "patch_size": 14,
        },
        text_config={**text, "rope_theta": 500000.0},
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(
            size={"longest_edge": 4 * 364},
            max_image_size={"longest_edge": 364},
            do_image_splitting=True,
        ),
        tokenizer=tokenizer,
        image_seq_len=169,
        chat_template=small.chat_template,
    )
    return config, processor


def _llama_7b(tokenizer: Any, vocab_size: int, **overrides: Any) -> dict[str, Any]:
    config = {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config.update(overrides)
    return config


SHAPES: dict[str, Callable[[Callable[[str], Path]], tuple[Any, Any]]] = {
    "llava-1.5-7b": llava_15_7b,
    "llava-next-7b": llava_next_7b,
    "qwen2-vl-7b": qwen2_vl_7b,
    "idefics3-8b": idefics3_8b,
}
# Image size each shape is measured at (its native budget, or a typical document page).
IMAGE_SIZE = {
    "llava-1.5-7b": (336, 336),
    "llava-next-7b": (672, 672),
    "qwen2-vl-7b": (1024, 768),
    "idefics3-8b": (728, 728),
}


def write_shaped(name: str, out: Path, tiny: Callable[[str], Path] | None = None) -> Path:
    """Write config.json and the processor files of a real-shaped model (no weights) to ``out``."""
    if tiny is None:
        from engine.testing import tiny_model_path as tiny
    config, processor = SHAPES[name](tiny)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# --- the GPU run --------------------------------------------------------------------------------


def _fill_random_weights(folder: Path) -> None:
    """Random bf16 weights of the real shapes, written as safetensors shards."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(folder)
    with torch.device("cuda"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="4GB")
    del model
    gc.collect()
    torch.cuda.empty_cache()


def measure(name: str, workdir: Path, tokens: int, keep: bool = False) -> dict[str, Any]:
    import torch
    from PIL import Image

    from engine import protocol as p
    from engine.backends.local_hf import LocalHFBackend
    from engine.devices import detect_devices
    from engine.models.planner import plan_memory
    from engine.protocol.models import PlanMemory
    from engine.runtime import LoadSpec

    folder = write_shaped(name, workdir / name)
    width, height = IMAGE_SIZE[name]
    plan = plan_memory(
        PlanMemory(
            job_id=name,
            model=str(folder),
            quant="nf4",
            device="cuda",
            image_width=width,
            image_height=height,
            images=1,
            context_tokens=tokens,
        ),
        detect_devices(),
    )
    started = time.perf_counter()
    if not list(folder.glob("*.safetensors")):  # another benchmark may have written them
        _fill_random_weights(folder)
    torch.cuda.reset_peak_memory_stats()
    backend = LocalHFBackend.load(LoadSpec(model=str(folder), quant="nf4", device="cuda"))
    backend.warm_up()  # as the engine does after loading: the graphs and their pools
    load_peak = torch.cuda.max_memory_allocated()
    resident = torch.cuda.memory_allocated()
    image = workdir / f"{name}.png"
    Image.new("RGB", (width, height), (90, 140, 200)).save(image)
    torch.cuda.reset_peak_memory_stats()
    question = [p.ChatMessage(role="user", text="Describe this image.", images=[str(image)])]
    result = backend.chat(
        question, p.Sampling(max_new_tokens=tokens), on_text=lambda _text: None,
        cancelled=lambda: False,
    )  # fmt: skip
    follow_up = [*question, p.ChatMessage(role="assistant", text=result.text),
                 p.ChatMessage(role="user", text="And the colours?")]  # fmt: skip
    backend.chat(follow_up, p.Sampling(max_new_tokens=8), on_text=lambda _text: None,
                 cancelled=lambda: False)  # fmt: skip
    answer_peak = torch.cuda.max_memory_allocated()
    backend.close()
    del backend
    gc.collect()
    torch.cuda.empty_cache()
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    measured = max(load_peak, answer_peak)
    error = (plan.allocated_bytes - measured) / measured
    return {
        "shape": name,
        "image": f"{width}x{height}",
        "prompt_tokens": result.prompt_tokens,
        "planned_sequence": plan.sequence_tokens,
        "planned_weights": plan.weights_bytes,
        "measured_resident": resident,
        "planned_allocated": plan.allocated_bytes,
        "measured_peak": measured,
        "load_peak": load_peak,
        "answer_peak": answer_peak,
        "error": error,
        "within_target": abs(error) <= TARGET,
        "seconds": time.perf_counter() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["llava-1.5-7b", "qwen2-vl-7b"])
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per answer")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", default="bench/results/memory_plan_gpu.json")
    args = parser.parse_args()
    unknown = [name for name in args.shapes if name not in SHAPES]
    if unknown:
        print(f"unknown shape(s): {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
        return 2
    import torch

    if not torch.cuda.is_available():
        print(
            "memory_plan_gpu: no CUDA GPU here; this benchmark measures GPU memory and needs one."
        )
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vd-memplan-"))
    from bench.report import write_merged

    rows: list[dict] = []
    report = {"gpu": torch.cuda.get_device_name(0), "target": TARGET, "rows": rows}
    for name in args.shapes:  # each shape written as soon as it is measured
        rows.append(measure(name, workdir, args.tokens, keep=bool(args.workdir)))
        write_merged(Path(args.out), report, rows="rows", key="shape", gpu="gpu")
    gib = 1024**3
    print(f"GPU: {torch.cuda.get_device_name(0)}")
    header = f"{'shape':<16}{'image':>10}{'weights':>10}{'resident':>10}{'planned':>10}{'peak':>10}{'error':>9}"
    print(header)
    for row in rows:
        print(
            f"{row['shape']:<16}{row['image']:>10}{row['planned_weights'] / gib:>9.2f}G"
            f"{row['measured_resident'] / gib:>9.2f}G{row['planned_allocated'] / gib:>9.2f}G"
            f"{row['measured_peak'] / gib:>9.2f}G{row['error']:>+8.1%} "
            f"{'ok' if row['within_target'] else 'OFF'}"
        )
    return 0 if all(row["within_target"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
