"""Tiny random models: each family builds offline, loads through the Auto classes and generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.testing import AUTO_CLASS, DEMO_FILE, FAMILIES, NF4_ON_CPU, PROMPT_FORMAT, REQUIRES

REPO = Path(__file__).resolve().parents[2]
GENERATIVE = tuple(f for f in FAMILIES if AUTO_CLASS[f] == "AutoModelForImageTextToText")
EMBEDDING = tuple(f for f in FAMILIES if AUTO_CLASS[f] == "AutoModel")
QUESTION = "What is in this image?"
# transformers' PaliGemma processor trips numpy 2's `__array__(copy=...)` deprecation: not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    # These matmuls are tiny: with several threads on a busy 2-core runner, thread hand-offs
    # made generate() ~20x slower (about 1 s instead of 50 ms for 8 tokens).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mode(family: str) -> str:
    # The id says how the family is loaded: NF4 where bitsandbytes can, float32 otherwise.
    return f"{family}-{'nf4' if NF4_ON_CPU[family] else 'fp32'}"


def _image(color: tuple[int, int, int] = (30, 120, 200)) -> Any:
    from PIL import Image, ImageDraw

    # Not square, so resizing/cropping paths of the image processors really run.
    image = Image.new("RGB", (64, 48), color)
    ImageDraw.Draw(image).rectangle((10, 8, 40, 30), fill=(240, 200, 20))
    return image


def _require(family: str) -> None:
    for module in REQUIRES[family]:
        pytest.importorskip(module, reason=f"{family}'s processor needs {module}")


def _load(family: str, path: Path) -> tuple[Any, Any]:
    import torch
    import transformers

    kwargs: dict[str, Any] = {"device_map": "cpu"}
    if NF4_ON_CPU[family]:
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    else:
        kwargs["dtype"] = torch.float32
    processor = transformers.AutoProcessor.from_pretrained(path)
    model = getattr(transformers, AUTO_CLASS[family]).from_pretrained(path, **kwargs)
    return processor, model.eval()


def _prompt(family: str, processor: Any) -> str:
    fmt = PROMPT_FORMAT[family]
    if fmt == "chat_template":
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
        ]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if fmt == "plain":
        return f"Question: {QUESTION} Answer:"
    assert fmt == "prefix", fmt  # PaliGemma: the processor puts image tokens and BOS in front
    return "<image>answer en " + QUESTION


def _assert_quantized(model: Any) -> None:
    import bitsandbytes as bnb
    import torch

    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    quantized = {n for n, m in linears.items() if isinstance(m, bnb.nn.Linear4bit)}
    assert quantized, "no Linear4bit layers: NF4 did not apply"
    assert all(linears[n].weight.quant_type == "nf4" for n in quantized)
    # What transformers deliberately keeps in full precision: the output head, the model's last
    # module, modules the class pins to fp32 (BLIP-2's Q-Former), and nn.MultiheadAttention's
    # out_proj (SigLIP's pooling head), whose weight torch reads directly.
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    last = list(model.named_parameters())[-1][0].removesuffix(".weight")
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    mha = {
        f"{n}.out_proj"
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.MultiheadAttention)
    }
    unexpected = [
        n
        for n in set(linears) - quantized
        if linears[n] is not output and n != last and n not in mha and not keep & set(n.split("."))
    ]
    assert not unexpected, f"unexpected full-precision linears: {sorted(unexpected)}"


@pytest.mark.slow
@pytest.mark.parametrize("family", GENERATIVE, ids=[_mode(f) for f in GENERATIVE])
def test_generate_with_image(family: str, tiny_model: Callable[[str], Path]) -> None:
    import torch

    _require(family)
    path = tiny_model(family)
    assert json.loads((path / DEMO_FILE).read_text())["family"] == family
    processor, model = _load(family, path)
    if NF4_ON_CPU[family]:
        _assert_quantized(model)
    prompt = _prompt(family, processor)
    inputs = processor(text=prompt, images=[_image()], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        # The vision path must be wired in: another image (same size) changes the logits.
        other = processor(text=prompt, images=[_image((220, 40, 90))], return_tensors="pt")
        logits = [model(**batch).logits[0, -1] for batch in (inputs, other)]
    new = out[0, inputs["input_ids"].shape[1] :]
    assert 1 <= new.numel() <= 8
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)
    assert not torch.allclose(logits[0], logits[1]), "the image does not reach the text model"


@pytest.mark.slow
@pytest.mark.parametrize("family", EMBEDDING, ids=[_mode(f) for f in EMBEDDING])
def test_embeddings(family: str, tiny_model: Callable[[str], Path]) -> None:
    import torch

    processor, model = _load(family, tiny_model(family))
    if NF4_ON_CPU[family]:
        _assert_quantized(model)
    texts = ["a photo of a cat", "a chart"]
    # SigLIP was trained with max_length padding; CLIP pads to the longest text.
    padding = "max_length" if family == "siglip" else True
    inputs = processor(text=texts, images=[_image()], padding=padding, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
    assert out.logits_per_image.shape == (1, len(texts))
    assert out.image_embeds.shape == (1, out.text_embeds.shape[1])
    assert out.text_embeds.shape[0] == len(texts)
    assert torch.isfinite(out.logits_per_image).all()


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_same_seed_same_weights(family: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from engine.testing import build_tiny_model

    a = load_file(build_tiny_model(family, tmp_path / "a", seed=0) / "model.safetensors")
    b = load_file(build_tiny_model(family, tmp_path / "b", seed=0) / "model.safetensors")
    c = load_file(build_tiny_model(family, tmp_path / "c", seed=1) / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert any(not a[k].equal(c[k]) for k in a)
    tokenizer = [(tmp_path / d / "tokenizer.json").read_bytes() for d in "ab"]
    assert tokenizer[0] == tokenizer[1]


def test_cache_is_shared_across_processes(tiny_model: Callable[[str], Path]) -> None:
    path = tiny_model("llava")
    assert tiny_model("llava") == path
    assert path.parent == Path(os.environ["VISIONDESK_TINY_CACHE"])
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    code = "from engine.testing import tiny_model_path; print(tiny_model_path('llava'))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert Path(done.stdout.strip()) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_import_is_light() -> None:
    code = "import sys, engine.testing; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_make_demo_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.testing.__main__ import main

    assert main(["make-demo", str(tmp_path / "demo"), "--family", "llava", "--seed", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "demo")
    demo = json.loads((tmp_path / "demo" / DEMO_FILE).read_text())
    assert demo == {
        "family": "llava",
        "demo": True,
        "note": "random weights: answers are random text",
    }
    with pytest.raises(SystemExit) as exc:
        main(["make-demo", str(tmp_path / "x"), "--family", "no-such-family"])
    assert exc.value.code == 2


def test_unknown_family() -> None:
    from engine.testing import tiny_model_path

    with pytest.raises(ValueError, match="unknown tiny family"):
        tiny_model_path("no-such-family")
