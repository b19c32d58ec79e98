"""Local chat through the real engine process equals direct ``generate``, token for token."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine import protocol as p
from engine.testing import AUTO_CLASS, NF4_ON_CPU, PROMPT_FORMAT
from engine.testing import FAMILIES as ALL_FAMILIES
from tests.engine.harness import EngineHarness, job_id

# Multi-turn, multi-image conversations: the chat-template families of the foundation.
FAMILIES = ["llava", "qwen2_vl"]
# Every generative family answers a one-image prompt (all load in NF4 on the CPU).
GENERATIVE = [f for f in ALL_FAMILIES if AUTO_CLASS[f] == "AutoModelForImageTextToText"]
MAX_NEW = 24


@pytest.fixture(scope="module")
def engine():
    harness = EngineHarness()
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, (size, colour) in enumerate([((64, 48), (200, 30, 30)), ((40, 90), (20, 160, 60))]):
        path = folder / f"image{index}.png"
        Image.new("RGB", size, colour).save(path)
        paths.append(str(path))
    return paths


def direct_generate(
    model_dir: Path,
    messages: list[p.ChatMessage],
    prompt_format: str = "chat_template",
    max_new_tokens: int = MAX_NEW,
    **processor_kwargs: int,
) -> list[int]:
    """What a person would write with transformers alone: NF4 on the CPU, greedy."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(
        model_dir,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        ),
        device_map="cpu",
        dtype=torch.float32,
    )
    conversation = [
        {
            "role": m.role,
            "content": [{"type": "image"} for _ in m.images] + [{"type": "text", "text": m.text}],
        }
        for m in messages
    ]
    if prompt_format == "chat_template":
        prompt = processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
    elif prompt_format == "plain":  # BLIP-2 style: no template, the processor adds image tokens
        prompt = f"Question: {messages[-1].text} Answer:"
    else:  # PaliGemma: the text is the prefix; the processor puts image tokens and BOS first
        prompt = messages[-1].text
    pil = [Image.open(path).convert("RGB") for m in messages for path in m.images]
    inputs = processor(text=[prompt], images=pil, return_tensors="pt", **processor_kwargs)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[-1] :].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_greedy_output_equals_direct_generate_nf4_cpu(
    engine, tiny_model, images, family
) -> None:
    model_dir = tiny_model(family)
    messages = [
        p.ChatMessage(role="user", text="What is in these pictures?", images=images),
        p.ChatMessage(role="assistant", text="two boxes"),
        p.ChatMessage(role="user", text="Which colours?", images=[images[0]]),
    ]
    finished, streamed = engine.run(
        p.Chat(
            job_id=job_id(),
            messages=messages,
            model=str(model_dir),
            quant="nf4",
            device="cpu",
            sampling=p.Sampling(max_new_tokens=MAX_NEW),
            return_token_ids=True,
        )
    )
    assert finished.reason in ("done", "length"), finished.message
    assert finished.result is not None
    assert finished.result["token_ids"] == direct_generate(model_dir, messages)
    assert streamed == finished.result["text"]  # the deltas add up to the answer
    assert finished.result["quant"] == "nf4" and finished.result["backend"] == "local"


@pytest.mark.parametrize("family", GENERATIVE)
def test_every_family_answers_a_one_image_prompt_like_direct_generate(
    engine, tiny_model, images, family
) -> None:
    assert NF4_ON_CPU[family], "all tiny families are sized for NF4 on the CPU"
    model_dir = tiny_model(family)
    messages = [p.ChatMessage(role="user", text="What is in this image?", images=images[:1])]
    finished, streamed = engine.run(
        p.Chat(
            job_id=job_id(),
            messages=messages,
            model=str(model_dir),
            quant="nf4",
            device="cpu",
            sampling=p.Sampling(max_new_tokens=12),
            return_token_ids=True,
        )
    )
    assert finished.reason in ("done", "length"), finished.message
    assert finished.result is not None and finished.result["completion_tokens"] >= 1
    expected = direct_generate(model_dir, messages, PROMPT_FORMAT[family], max_new_tokens=12)
    assert finished.result["token_ids"] == expected
    assert streamed == finished.result["text"]


def test_model_stays_resident_between_turns(engine, tiny_model, images) -> None:
    model_dir = str(tiny_model("llava"))
    chat = dict(model=model_dir, quant="nf4", device="cpu", sampling=p.Sampling(max_new_tokens=4))
    message = [p.ChatMessage(role="user", text="hi", images=images[:1])]
    engine.run(p.Chat(job_id=job_id(), messages=message, **chat))
    second = job_id()
    engine.send(p.Chat(job_id=second, messages=message, **chat))
    stages = [e for e in engine.job_events(second) if isinstance(e, p.Progress)]
    assert not [e for e in stages if e.stage == "loading"], "the model was loaded again"


def test_cancel_mid_stream_ends_promptly_and_the_engine_serves_the_next_job(
    engine, tiny_model, images
) -> None:
    model_dir = str(tiny_model("llava"))
    long_job = job_id()
    engine.send(
        p.Chat(
            job_id=long_job,
            messages=[p.ChatMessage(role="user", text="tell me everything", images=images[:1])],
            model=model_dir,
            quant="nf4",
            device="cpu",
            sampling=p.Sampling(max_new_tokens=4000),
        )
    )
    cancelled_at = None
    finished = None
    for event in engine.job_events(long_job):
        if isinstance(event, p.Delta) and cancelled_at is None:
            engine.send(p.Cancel(job_id=long_job))
            engine.send(p.Cancel(job_id=long_job))
            cancelled_at = time.monotonic()
        if isinstance(event, p.Finished):
            finished = event
    assert cancelled_at is not None and finished is not None
    assert finished.reason == "cancelled"
    assert time.monotonic() - cancelled_at < 5.0
    assert finished.result is not None and finished.result["completion_tokens"] < 4000
    after, _ = engine.run(
        p.Chat(
            job_id=job_id(),
            messages=[p.ChatMessage(role="user", text="again", images=images[:1])],
            model=model_dir,
            quant="nf4",
            device="cpu",
            sampling=p.Sampling(max_new_tokens=3),
        )
    )
    assert after.reason in ("done", "length")


def _write(name: str, data: bytes):
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    return make


@pytest.mark.parametrize(
    "make, code",
    [
        (lambda folder: folder / "missing.png", "bad_input"),
        (_write("empty.png", b""), "bad_input"),
        (_write("text.png", b"hello, not a picture"), "bad_input"),
        (_write("truncated.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"), "bad_input"),
    ],
    ids=["missing", "empty", "not-an-image", "truncated"],
)
def test_bad_images_fail_the_job_not_the_engine(engine, tiny_model, tmp_path, make, code) -> None:
    path = make(tmp_path)
    finished, _ = engine.run(
        p.Chat(
            job_id=job_id(),
            messages=[p.ChatMessage(role="user", text="?", images=[str(path)])],
            model=str(tiny_model("llava")),
            quant="nf4",
            device="cpu",
        )
    )
    assert finished.reason == "error" and finished.error_code == code and finished.message
    engine.send(p.GetStatus())
    assert isinstance(engine.next_event(), p.EngineStatus)


def test_sampling_with_a_seed_is_reproducible(engine, tiny_model, images) -> None:
    chat = dict(
        messages=[p.ChatMessage(role="user", text="describe", images=images[:1])],
        model=str(tiny_model("qwen2_vl")),
        quant="nf4",
        device="cpu",
        sampling=p.Sampling(temperature=1.0, top_p=0.95, max_new_tokens=12, seed=7),
        return_token_ids=True,
    )
    first, _ = engine.run(p.Chat(job_id=job_id(), **chat))
    second, _ = engine.run(p.Chat(job_id=job_id(), **chat))
    assert first.result and second.result
    assert first.result["token_ids"] == second.result["token_ids"]


def test_a_picture_budget_scales_pictures_for_models_that_keep_their_resolution(
    engine, tiny_model, tmp_path
) -> None:
    """Qwen2-VL reads a picture at its own resolution, up to ~12.8 MP (a phone photo: ~15,000
    tokens). A request's budget caps it (by default ``CHAT_IMAGE_MAX_PIXELS``), never above the
    model's own limit; the answer is the one transformers gives for the picture at that cap."""
    model_dir = tiny_model("qwen2_vl")
    picture = tmp_path / "photo.png"
    Image.new("RGB", (224, 168), (30, 90, 200)).save(picture)
    messages = [p.ChatMessage(role="user", text="What is this?", images=[str(picture)])]

    def ask(budget: int | None) -> dict:
        finished, _ = engine.run(
            p.Chat(
                job_id=job_id(),
                messages=messages,
                model=str(model_dir),
                quant="nf4",
                device="cpu",
                sampling=p.Sampling(max_new_tokens=8),
                return_token_ids=True,
                image_max_pixels=budget,
            )
        )
        assert finished.reason in ("done", "length"), finished.message
        assert finished.result is not None
        return finished.result

    default, small, huge = ask(None), ask(5_000), ask(10**9)
    assert p.CHAT_IMAGE_MAX_PIXELS > 224 * 168  # the tiny model's own limit (12,544) applies
    assert small["prompt_tokens"] < default["prompt_tokens"] == huge["prompt_tokens"]
    expected = direct_generate(model_dir, messages, max_new_tokens=8, max_pixels=5_000)
    assert small["token_ids"] == expected


def test_the_default_picture_budget_applies_only_where_the_model_keeps_the_resolution(
    tiny_model,
) -> None:
    from engine.backends.local_hf import LocalHFBackend
    from engine.runtime import LoadSpec

    qwen = LocalHFBackend.load(LoadSpec(str(tiny_model("qwen2_vl")), "none", "cpu"))
    image_processor = qwen.processor.image_processor
    # A real Qwen2-VL's own limit: 12,845,056 pixels, and a minimum of 3,136.
    image_processor.size = {**dict(image_processor.size), "longest_edge": 12_845_056}
    assert qwen.image_budget(None) == {"max_pixels": p.CHAT_IMAGE_MAX_PIXELS}
    assert qwen.image_budget(2_000_000) == {"max_pixels": 2_000_000}
    assert qwen.image_budget(10**9) == {"max_pixels": 12_845_056}
    assert qwen.image_budget(100) == {"max_pixels": int(image_processor.size["shortest_edge"])}
    qwen.adapter_image_budget = 401_408  # an adapter keeps the size it was trained at
    assert qwen.image_budget(None) == {}
    llava = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "none", "cpu"))
    assert llava.image_budget(None) == {}  # resized to its fixed 336-px-class size anyway


def test_a_long_strip_is_padded_for_models_that_refuse_extreme_aspect_ratios(
    tiny_model, tmp_path
) -> None:
    from PIL import Image

    from engine.backends.local_hf import NATIVE_RESOLUTION_MAX_ASPECT, LocalHFBackend
    from engine.runtime import LoadSpec

    strip = tmp_path / "panorama.png"
    Image.new("RGB", (6000, 10), (20, 40, 60)).save(strip)
    qwen = LocalHFBackend.load(LoadSpec(str(tiny_model("qwen2_vl")), "none", "cpu"))
    question = [p.ChatMessage(role="user", text="What is this?", images=[str(strip)])]
    inputs = qwen.build_inputs(question, on_device=False)  # Qwen's processor alone refuses it
    _, height, width = (int(v) for v in inputs["image_grid_thw"][0])
    assert width / height <= NATIVE_RESOLUTION_MAX_ASPECT and width > height
