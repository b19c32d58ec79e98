"""The memory planner, from config and processor files alone (no weights anywhere in this file).

Real-shaped configs (published sizes of LLaVA-1.5-7B, LLaVA-NeXT-Mistral-7B, Qwen2-VL-7B,
Idefics3-8B) with their real processor classes are written by ``bench/memory_plan_gpu.py``;
the planner's image-token counts are compared with what those processors put in ``input_ids``
and with each family's published rule.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.memory_plan_gpu import SHAPES, write_shaped
from engine import protocol as p
from engine.errors import ModelUnsafe, OutOfMemory
from engine.models import planner
from engine.models.image_tokens import image_token_id, load_processor, prompt_for
from engine.protocol.models import GIB, PlanMemory, describe_plan, fit_verdict

REPO = Path(__file__).resolve().parents[2]
GPU_24 = [p.DeviceInfo(kind="cuda", name="24 GiB GPU", total_memory=24 * GIB)]
PUBLISHED_PARAMS = {  # safetensors totals of the published checkpoints
    "llava-1.5-7b": 7_063_427_072,
    "qwen2-vl-7b": 8_291_375_616,
}


@pytest.fixture(scope="module")
def shaped(tmp_path_factory, tiny_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shaped")
    return {name: write_shaped(name, root / name, tiny_model) for name in SHAPES}


def plan(folder: Path, **kwargs) -> p.models.MemoryPlan:
    kwargs.setdefault("device", "cuda")
    devices = kwargs.pop("devices", GPU_24)
    return planner.plan_memory(PlanMemory(job_id="t", model=str(folder), **kwargs), devices)


def processor_count(folder: Path, width: int, height: int) -> int:
    """Image tokens counted directly: the real processor on a blank image, the id counted."""
    from PIL import Image
    from transformers import AutoConfig

    processor = load_processor(folder)
    config = AutoConfig.from_pretrained(folder)
    prompt = prompt_for(processor, config.model_type, 1)
    encoded = processor(
        text=[prompt], images=[Image.new("RGB", (width, height))], return_tensors="pt"
    )
    return int((encoded["input_ids"][0] == image_token_id(processor, config)).sum())


def test_the_shaped_folders_hold_config_and_processor_files_only(shaped) -> None:
    for folder in shaped.values():
        names = {f.name for f in folder.iterdir()}
        assert "config.json" in names
        assert not {n for n in names if n.endswith((".safetensors", ".bin", ".pt", ".pth"))}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameters_counted_on_the_meta_device_match_the_published_checkpoint(shaped, name) -> None:
    result = plan(shaped[name], quant="nf4")
    assert result.params_total == PUBLISHED_PARAMS[name]
    assert result.params_vision + result.params_projector + result.params_language == (
        result.params_total
    )
    assert "no weights are present" in " ".join(result.notes)


@pytest.mark.parametrize("size", [(336, 336), (1024, 768), (200, 600)])
def test_llava_15_costs_576_image_tokens_at_336_px_whatever_the_input_size(shaped, size) -> None:
    result = plan(shaped["llava-1.5-7b"], image_width=size[0], image_height=size[1])
    assert result.image_tokens_per_image == 576 == processor_count(shaped["llava-1.5-7b"], *size)


def test_a_picture_over_the_pixel_limit_is_refused_before_one_is_made(shaped) -> None:
    """Planning makes a blank picture of the size asked for: 100000×100000 would take 30 GB."""
    from engine.errors import BadInput

    with pytest.raises(BadInput, match="100000×100000 pixels is more than the"):
        plan(shaped["llava-1.5-7b"], image_width=100_000, image_height=100_000)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((336, 336), None), ((672, 672), 2928), ((672, 336), None), ((1008, 336), None),
     ((1000, 700), None)],
)  # fmt: skip
def test_llava_next_anyres_token_counts_equal_the_processor(shaped, size, expected) -> None:
    folder = shaped["llava-next-7b"]
    counted = plan(folder, image_width=size[0], image_height=size[1]).image_tokens_per_image
    assert counted == processor_count(folder, *size)
    if expected is not None:  # 2x2 tiles of 24x24 + a newline per row + the 576-token base view
        assert counted == expected == 48 * 48 + 48 + 576


def test_llava_next_costs_more_for_a_larger_grid(shaped) -> None:
    folder = shaped["llava-next-7b"]
    counts = [
        plan(folder, image_width=w, image_height=h).image_tokens_per_image
        for w, h in ((336, 336), (672, 336), (672, 672))
    ]
    assert counts == sorted(counts) and len(set(counts)) == 3


def qwen_tokens(width: int, height: int, min_pixels: int, max_pixels: int) -> int:
    """Qwen2-VL's published rule: round each side to 28 px, keep the area within the budget,
    one token per 28x28 pixels."""
    h, w = max(28, round(height / 28) * 28), max(28, round(width / 28) * 28)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / 28) * 28, math.floor(width / beta / 28) * 28
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / 28) * 28, math.ceil(width * beta / 28) * 28
    return (h // 28) * (w // 28)


@pytest.mark.parametrize(
    "size", [(448, 448), (1000, 700), (56, 56), (3000, 3000), (30, 30), (1920, 1080)]
)
def test_qwen2_vl_costs_one_token_per_28_px_square_within_the_pixel_budget(shaped, size) -> None:
    folder = shaped["qwen2-vl-7b"]
    counted = plan(folder, image_width=size[0], image_height=size[1]).image_tokens_per_image
    assert counted == processor_count(folder, *size)
    assert counted == qwen_tokens(*size, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    assert counted <= 1280


@pytest.mark.parametrize(
    ("size", "tiles"), [((300, 200), 4 * 3), ((1456, 1456), 4 * 4), ((2000, 500), 4 * 1)]
)
def test_idefics3_token_counts_equal_the_processor_for_several_sizes(shaped, size, tiles) -> None:
    folder = shaped["idefics3-8b"]
    counted = plan(folder, image_width=size[0], image_height=size[1]).image_tokens_per_image
    assert counted == processor_count(folder, *size)
    assert counted == (tiles + 1) * 169  # 364 px tiles plus the global view, 169 tokens each


def test_kv_cache_is_layers_times_kv_heads_times_head_dim_times_two_per_token(shaped) -> None:
    result = plan(shaped["llava-1.5-7b"], image_width=336, image_height=336, context_tokens=1000)
    assert 1000 + 576 < result.sequence_tokens < 1000 + 576 + 64  # plus the prompt's words
    per_token = 32 * 32 * 128 * 2 * 2  # layers, kv heads, head dim, K and V, bf16
    assert result.kv_cache_bytes == per_token * result.sequence_tokens
    qwen = plan(shaped["qwen2-vl-7b"], context_tokens=1000)
    assert qwen.kv_cache_bytes == 28 * 4 * 128 * 2 * 2 * qwen.sequence_tokens  # grouped-query


def test_nf4_quantises_the_linear_layers_and_keeps_embeddings_and_lm_head(shaped) -> None:
    nf4 = plan(shaped["llava-1.5-7b"], quant="nf4")
    none = plan(shaped["llava-1.5-7b"], quant="none")
    kept = nf4.params_total - nf4.params_quantized
    assert 2 * 32064 * 4096 <= kept < 2 * 32064 * 4096 + 10_000_000  # embed + lm_head + norms
    expected = nf4.params_quantized * planner.NF4_BYTES_PER_PARAM + kept * 2
    assert nf4.weights_bytes == pytest.approx(expected, rel=0.01)
    assert none.weights_bytes == pytest.approx(nf4.params_total * 2, rel=0.01)
    assert 3.5 * GIB < nf4.weights_bytes < 4.0 * GIB


def test_a_gpu_plan_holds_the_captured_follow_up_prefills_dequantised_weight(
    shaped, monkeypatch
) -> None:
    """On CUDA a 4-bit model's follow-up prefill is a captured graph whose pool keeps one
    dequantised weight (the largest Linear: LLaVA-1.5-7B's MLP, 4096 x 11008 in bf16); a bf16
    model dequantises nothing."""
    folder = shaped["llava-1.5-7b"]
    graphs = [plan(folder, quant=quant).activation_bytes for quant in ("nf4", "none")]
    generate_only = planner.quirks_for("mllama")  # a family that keeps generate()
    monkeypatch.setattr(planner, "quirks_for", lambda _type: generate_only)
    without = [plan(folder, quant=quant).activation_bytes for quant in ("nf4", "none")]
    assert graphs[0] - without[0] == 4096 * 11008 * 2
    assert graphs[1] == without[1]


def test_the_verdict_compares_the_total_with_the_gpu_and_advises_lighter_options(shaped) -> None:
    folder = shaped["qwen2-vl-7b"]
    big = plan(folder, quant="nf4", vram_bytes=24 * GIB)
    assert big.verdict == "fits" and big.advice == []
    small = plan(folder, quant="none", vram_bytes=8 * GIB)
    assert small.verdict == "does_not_fit"
    assert any(line.startswith("Quantise to nf4") for line in small.advice)
    assert any("smaller model" in line for line in small.advice)
    assert fit_verdict(small.total_bytes, small.total_bytes) == "tight"
    rows = dict(describe_plan(small))
    assert rows["verdict"] == "does not fit" and "GiB" in rows["total"]


def test_more_images_and_more_context_cost_more(shaped) -> None:
    folder = shaped["qwen2-vl-7b"]
    one = plan(folder, images=1)
    three = plan(folder, images=3)
    longer = plan(folder, images=1, context_tokens=8000)
    assert three.sequence_tokens > one.sequence_tokens + 2 * one.image_tokens_per_image - 10
    assert three.kv_cache_bytes > one.kv_cache_bytes
    assert longer.kv_cache_bytes > one.kv_cache_bytes and longer.total_bytes > one.total_bytes


def test_mllama_counts_the_cross_attention_states(tiny_model) -> None:
    result = plan(tiny_model("mllama"), device="cpu", devices=[_cpu()])
    config = json.loads((tiny_model("mllama") / "config.json").read_text())
    assert result.cross_attention_tokens > 0
    text = config["text_config"]
    cross_layers = len(text["cross_attention_layers"])
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    per_token = 2 * text["num_key_value_heads"] * head_dim * 4  # fp32 on the CPU
    self_layers = text["num_hidden_layers"] - cross_layers
    assert result.kv_cache_bytes == per_token * (
        self_layers * result.sequence_tokens + cross_layers * result.cross_attention_tokens
    )


@pytest.mark.parametrize("family", ["paligemma", "blip2", "smolvlm", "internvl", "idefics2"])
def test_prefix_plain_and_template_families_count_what_their_processor_produces(
    tiny_model, family
) -> None:
    folder = tiny_model(family)
    result = plan(folder, device="cpu", devices=[_cpu()], image_width=80, image_height=60)
    assert result.image_tokens_per_image == processor_count(folder, 80, 60) > 0


def test_an_embedding_model_is_planned_without_a_kv_cache(tiny_model) -> None:
    result = plan(tiny_model("siglip"), device="cpu", devices=[_cpu()])
    assert result.kv_cache_bytes == 0 and result.params_vision > 0 and result.verdict == "fits"


def test_a_remote_code_config_is_refused_before_any_code_runs(shaped, tmp_path) -> None:
    folder = tmp_path / "remote"
    shutil.copytree(shaped["llava-1.5-7b"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnsafe, match="trust_remote_code"):
        plan(folder)


def test_a_load_that_cannot_fit_is_refused_with_advice_before_loading(shaped, tmp_path) -> None:
    folder = tmp_path / "llava-7b-with-weights"
    shutil.copytree(shaped["llava-1.5-7b"], folder)
    with open(folder / "model.safetensors", "wb") as weights:  # sparse: 14 GB, no blocks
        weights.truncate(14 * 10**9)
    devices = [p.DeviceInfo(kind="cuda", name="6 GiB GPU", total_memory=6 * GIB)]
    with pytest.raises(OutOfMemory) as refused:
        planner.refuse_if_too_big(str(folder), "none", "auto", devices)
    assert "Quantise to nf4" in refused.value.message and "6 GiB GPU" in refused.value.message
    fits = planner.refuse_if_too_big(str(folder), "nf4", "auto", devices)
    assert fits is not None and fits.verdict in ("fits", "tight")


def test_a_small_model_is_let_through_without_planning(tiny_model) -> None:
    assert planner.refuse_if_too_big(str(tiny_model("llava")), "none", "cpu", [_cpu()]) is None


def test_the_gpu_benchmark_fails_clearly_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: run the benchmark itself")
    result = subprocess.run(
        [sys.executable, "bench/memory_plan_gpu.py", "--shapes", "llava-1.5-7b"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no CUDA GPU" in result.stdout


def _cpu() -> p.DeviceInfo:
    return p.DeviceInfo(kind="cpu", name="test CPU", total_memory=16 * GIB)
