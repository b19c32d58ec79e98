"""The engine's static-cache decode loop equals ``generate`` and reuses the conversation's cache.

On the CPU the loop runs eagerly: the same code that a CUDA graph captures on a GPU, so these
tests pin what the graph replays (its capture itself needs a GPU: ``bench/decode_gpu.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from engine import protocol as p
from engine.backends.local_hf import LocalHFBackend
from engine.backends.static_decode import BUCKET, capacity_for
from engine.models.families import quirks_for
from engine.runtime import LoadSpec
from engine.testing import AUTO_CLASS, FAMILIES
from tests.engine.test_prefix_cache import VisionCalls, sharpen_attention

GENERATIVE = [f for f in FAMILIES if AUTO_CLASS[f] == "AutoModelForImageTextToText"]
GREEDY = p.Sampling(max_new_tokens=12)


def answer(backend: LocalHFBackend, messages: list[p.ChatMessage], **extra: Any) -> Any:
    sampling = extra.pop("sampling", GREEDY)
    return backend.chat(
        messages, sampling, on_text=lambda _t: None, cancelled=lambda: False, **extra
    )


def two_turns(
    picture: str, question: str = "What is this?"
) -> tuple[list[p.ChatMessage], list[p.ChatMessage]]:
    """A first turn with the picture, and a follow-up about it."""
    first_turn = [p.ChatMessage(role="user", text=question, images=[picture])]
    follow_up = [
        *first_turn,
        p.ChatMessage(role="assistant", text="A blue box on orange."),
        p.ChatMessage(role="user", text="And its colours?"),
    ]
    return first_turn, follow_up


class PrefillLengths:
    """Records how many tokens each prefill of the static loop ran."""

    def __init__(self, backend: LocalHFBackend) -> None:
        assert backend.decoder is not None
        self.lengths: list[int] = []
        original = backend.decoder.prefill

        def prefill(inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.lengths.append(int(inputs["input_ids"].shape[-1]))
            return original(inputs, *args, **kwargs)

        backend.decoder.prefill = prefill  # type: ignore[method-assign]


@pytest.mark.parametrize("family", GENERATIVE)
def test_static_loop_equals_generate_token_for_token_and_reuses_the_cache(
    family, tiny_model, picture
) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "nf4", "cpu"))
    assert backend.decoder is None, "on the CPU generate() stays the default"
    assert backend.info().decoding == "generate"
    first_turn, follow_up = two_turns(picture)
    plain_first = answer(backend, first_turn)
    backend.prefix_cache.clear()
    plain_follow_up = answer(backend, follow_up)

    if not backend.set_static_decode(True):
        # Families whose generate() carries more than the KV cache keep it (families.py).
        assert not quirks_for(backend.resolved.model_type).static_decode
        assert answer(backend, first_turn).token_ids == plain_first.token_ids
        return
    assert backend.info().decoding == "static"  # eager: graphs are for CUDA
    prefills = PrefillLengths(backend)
    vision = VisionCalls(backend.model)
    static_first = answer(backend, first_turn)
    assert static_first.token_ids == plain_first.token_ids
    encoded = vision.count
    static_follow_up = answer(backend, follow_up)
    assert static_follow_up.token_ids == plain_follow_up.token_ids

    if quirks_for(backend.resolved.model_type).reuse_prefix:
        assert vision.count == encoded, "the image was encoded again"
        assert static_follow_up.cached_tokens > 0
        # The follow-up prefilled only the tokens the cache did not hold.
        assert (
            prefills.lengths[-1] == static_follow_up.prompt_tokens - static_follow_up.cached_tokens
        )
        assert (
            prefills.lengths[-1] < static_follow_up.prompt_tokens - static_first.prompt_tokens + 2
        )
    else:
        assert static_follow_up.cached_tokens == 0


def test_a_changed_image_is_encoded_again(tiny_model, picture, tmp_path) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    backend.set_static_decode(True)
    vision = VisionCalls(backend.model)
    answer(backend, [p.ChatMessage(role="user", text="What is this?", images=[picture])])
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 48), (10, 200, 10)).save(other)
    before = vision.count
    again = answer(backend, [p.ChatMessage(role="user", text="What is this?", images=[str(other)])])
    assert again.cached_tokens == 0 and vision.count > before
    backend.set_static_decode(False)
    fresh = answer(backend, [p.ChatMessage(role="user", text="What is this?", images=[str(other)])])
    assert fresh.token_ids == again.token_ids


def test_grammar_penalty_and_seeded_sampling_work_in_the_static_loop(tiny_model, picture) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    question = [p.ChatMessage(role="user", text="Total?", images=[picture])]
    schema = {
        "type": "object",
        "properties": {"total": {"type": "integer"}},
        "required": ["total"],
    }
    penalised = p.Sampling(max_new_tokens=24, repetition_penalty=1.3)
    plain_json = answer(backend, question, json_schema=schema, sampling=penalised)
    backend.set_static_decode(True)
    static_json = answer(backend, question, json_schema=schema, sampling=penalised)
    assert static_json.token_ids == plain_json.token_ids
    assert static_json.text.lstrip().startswith("{")

    sampled = p.Sampling(max_new_tokens=16, temperature=0.9, top_p=0.9, seed=7)
    runs = [answer(backend, question, sampling=sampled).token_ids for _ in range(2)]
    assert runs[0] == runs[1]
    other_seed = answer(backend, question, sampling=p.Sampling(**{**_fields(sampled), "seed": 8}))
    greedy = answer(backend, question)
    assert runs[0] != greedy.token_ids or other_seed.token_ids != runs[0]


def _fields(sampling: p.Sampling) -> dict[str, Any]:
    return {name: getattr(sampling, name) for name in sampling.__struct_fields__}


def test_cancel_stops_the_static_loop_between_tokens(tiny_model, picture) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    backend.set_static_decode(True)
    pieces: list[str] = []
    result = backend.chat(
        [p.ChatMessage(role="user", text="Talk.", images=[picture])],
        p.Sampling(max_new_tokens=200),
        on_text=pieces.append,
        cancelled=lambda: len(pieces) >= 3,
    )
    assert result.reason == "cancelled"
    assert result.completion_tokens < 200
    assert "".join(pieces) == result.text


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_the_cache_grows_in_buckets_and_a_longer_turn_keeps_the_conversation(
    family, tiny_model, picture
) -> None:
    assert capacity_for(1) == BUCKET and capacity_for(BUCKET + 1) == 2 * BUCKET
    assert capacity_for(10 * BUCKET, limit=3 * BUCKET) == 3 * BUCKET
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "none", "cpu"))
    sharpen_attention(backend.model)
    backend.set_static_decode(True)
    decoder = backend.decoder
    assert decoder is not None
    first_turn = [p.ChatMessage(role="user", text="What is this?", images=[picture])]
    first = answer(backend, first_turn)
    capacity, cache = decoder.capacity, decoder.cache
    assert capacity >= first.prompt_tokens + GREEDY.max_new_tokens
    follow_up = [
        *first_turn,
        p.ChatMessage(role="assistant", text=first.text),
        p.ChatMessage(role="user", text="More?"),
    ]
    long = p.Sampling(max_new_tokens=capacity)  # does not fit: the cache grows
    longer = backend.chat(follow_up, long, on_text=lambda _t: None, cancelled=lambda: False)
    assert decoder.capacity > capacity and decoder.cache is not cache
    assert longer.cached_tokens > 0, "the conversation was carried into the larger cache"
    backend.set_static_decode(False)  # a fresh run with generate()
    fresh = backend.chat(follow_up, long, on_text=lambda _t: None, cancelled=lambda: False)
    assert fresh.cached_tokens == 0 and fresh.token_ids == longer.token_ids


def test_a_grown_cache_is_allocated_at_once_so_its_first_turn_is_bucketed(
    tiny_model, picture
) -> None:
    """Only a model's first cache is written eagerly first: one that grows is allocated like the
    old one, so a new conversation that needs more room still runs its prefill through a graph
    (its bucket's, on a GPU)."""
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    question = [p.ChatMessage(role="user", text="What is this?", images=[picture])]
    long = p.Sampling(max_new_tokens=3 * BUCKET)
    backend.prefix_cache.clear()
    expected = answer(backend, question, sampling=long).token_ids
    backend.set_static_decode(True, prefill_bucket=16)
    decoder = backend.decoder
    assert decoder is not None
    answer(backend, question)
    capacity = decoder.capacity
    backend.prefix_cache.clear()  # a new conversation that needs a larger cache
    grown = answer(backend, question, sampling=long)
    assert decoder.capacity > capacity
    assert decoder.prefills_bucketed == 1
    assert grown.token_ids == expected


def test_warm_up_leaves_a_ready_cache_and_no_conversation_behind(tiny_model, picture) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    question = [p.ChatMessage(role="user", text="What is this?", images=[picture])]
    plain = answer(backend, question)
    backend.warm_up()
    assert backend.decoder is None  # nothing to prepare for generate()
    backend.set_static_decode(True)
    decoder = backend.decoder
    assert decoder is not None
    backend.warm_up(force=True)  # the GPU's warm-up, run eagerly
    assert decoder.capacity >= 8 * BUCKET
    assert backend.feature_cache.total_bytes() == 0
    after = answer(backend, question)
    assert after.cached_tokens == 0 and after.token_ids == plain.token_ids


FUSED_SCRIPT = """
import json, sys
from engine import protocol as p
from engine.backends.local_hf import LocalHFBackend
from engine.backends.static_decode import fuse_small_ops
from engine.runtime import LoadSpec
model, picture = sys.argv[1], sys.argv[2]
backend = LocalHFBackend.load(LoadSpec(model, "nf4", "cpu"))
question = [p.ChatMessage(role="user", text="What is this?", images=[picture])]
sampling = p.Sampling(max_new_tokens=12)
plain = backend.chat(question, sampling, on_text=lambda _t: None, cancelled=lambda: False)
backend.set_static_decode(True)
fused = fuse_small_ops(backend.model)
result = backend.chat(question, sampling, on_text=lambda _t: None, cancelled=lambda: False)
print(json.dumps({"fused": fused, "plain": plain.token_ids, "static": result.token_ids}))
"""


def test_compiled_norm_and_rotary_keep_the_greedy_answer(tiny_model, picture) -> None:
    """The optional fused variant (bench/decode_gpu.py's engine_fused) changes no token.

    It patches transformers' rotary function for the whole process, so it runs in its own."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FUSED_SCRIPT, str(tiny_model("llava")), picture],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "LlamaRMSNorm" in result["fused"]
    assert any(name.endswith("apply_rotary_pos_emb") for name in result["fused"])
    assert result["static"] == result["plain"]


@pytest.fixture(scope="module")
def qwen_adapter(tiny_model, tmp_path_factory) -> str:
    """A peft LoRA adapter (random, non-zero) on the language model of the tiny Qwen2-VL, with
    the notes a VisionDesk run writes, including a training image budget."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    folder = tmp_path_factory.mktemp("adapter") / "qwen-lora"
    base = AutoModelForImageTextToText.from_pretrained(tiny_model("qwen2_vl"), dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
        init_lora_weights=False,  # random A and B: the adapter changes the answer
    )
    torch.manual_seed(0)
    get_peft_model(base, config).save_pretrained(folder)
    notes = {"adapter_kind": "peft", "skip_modules": [], "image_max_pixels": 56 * 56 * 2}
    (folder / "visiondesk_adapter.json").write_text(json.dumps(notes), encoding="utf-8")
    return str(folder)


def test_an_adapter_decodes_the_same_in_the_static_loop_at_its_training_image_size(
    tiny_model, qwen_adapter, tmp_path
) -> None:
    model = str(tiny_model("qwen2_vl"))
    big = tmp_path / "big.png"
    Image.new("RGB", (448, 448), (30, 140, 90)).save(big)
    question = [p.ChatMessage(role="user", text="What is this?", images=[str(big)])]
    base = LocalHFBackend.load(LoadSpec(model, "nf4", "cpu"))
    adapted = LocalHFBackend.load(LoadSpec(model, "nf4", "cpu", adapter=qwen_adapter))
    size = adapted.processor.image_processor.size
    assert size["longest_edge"] == 56 * 56 * 2  # the budget the adapter was trained with
    base_answer = answer(base, question)
    plain = answer(adapted, question)
    assert plain.prompt_tokens < base_answer.prompt_tokens  # fewer image tokens at that budget
    adapted.set_static_decode(True)
    static = answer(adapted, question)
    assert static.token_ids == plain.token_ids
    follow_up = [
        *question,
        p.ChatMessage(role="assistant", text=static.text),
        p.ChatMessage(role="user", text="Sure?"),
    ]
    reused = answer(adapted, follow_up)
    assert reused.cached_tokens > 0
    adapted.set_static_decode(True, chunk=4)  # the follow-up in pieces, through peft's wrapper
    assert adapted.decoder is not None
    adapted.decoder.max_pieces = 100
    pieces = ChunkCalls(adapted.decoder)
    answer(adapted, question)
    in_pieces = answer(adapted, follow_up)
    assert in_pieces.cached_tokens > 0 and pieces.count > 0
    assert in_pieces.token_ids == reused.token_ids
    adapted.set_static_decode(False)
    assert answer(adapted, follow_up).token_ids == reused.token_ids


def test_a_failing_static_loop_falls_back_to_generate_but_out_of_memory_is_reported(
    tiny_model, picture
) -> None:
    import torch

    from engine.errors import EngineError

    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    question = [p.ChatMessage(role="user", text="What is this?", images=[picture])]
    plain = answer(backend, question)

    def broken(_inputs: dict[str, Any], **_kwargs: Any) -> Any:
        raise RuntimeError("an op this family's forward cannot do here")

    backend.set_static_decode(True)
    assert backend.decoder is not None
    backend.decoder.prefill = broken  # type: ignore[method-assign]
    assert answer(backend, question).token_ids == plain.token_ids  # the answer still comes
    assert backend.decoder is None  # and generate() is used from now on

    def out_of_memory(_inputs: dict[str, Any], **_kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    backend.set_static_decode(True)
    assert backend.decoder is not None
    backend.decoder.prefill = out_of_memory  # type: ignore[method-assign]
    with pytest.raises(EngineError) as raised:
        answer(backend, question)
    assert raised.value.code == "out_of_memory"
    assert backend.decoder.cache is None  # its memory is given back
    backend.decoder.prefill = type(backend.decoder).prefill.__get__(backend.decoder)
    assert answer(backend, question).token_ids == plain.token_ids  # and the next turn works


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_the_loop_that_queues_the_next_step_first_gives_the_same_answers(
    family, tiny_model, picture
) -> None:
    """On a GPU each step is queued before the host reads the token it feeds (and a stop
    leaves one extra token in the cache); here that order is forced on the CPU."""
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "nf4", "cpu"))
    first_turn = [p.ChatMessage(role="user", text="What is this?", images=[picture])]
    follow_up = [
        *first_turn,
        p.ChatMessage(role="assistant", text="A box."),
        p.ChatMessage(role="user", text="Colours?"),
    ]
    plain = [answer(backend, first_turn).token_ids]
    backend.prefix_cache.clear()
    plain.append(answer(backend, follow_up).token_ids)
    backend.set_static_decode(True)
    assert backend.decoder is not None
    backend.decoder.ready = lambda: True  # type: ignore[method-assign]
    queued = [answer(backend, first_turn).token_ids]
    reused = answer(backend, follow_up)
    queued.append(reused.token_ids)
    assert queued == plain and reused.cached_tokens > 0

    pieces: list[str] = []
    stopped = backend.chat(
        first_turn,
        p.Sampling(max_new_tokens=50),
        on_text=pieces.append,
        cancelled=lambda: len(pieces) >= 2,
    )
    assert stopped.reason == "cancelled" and "".join(pieces) == stopped.text
    # The cache holds one token beyond the answer; a follow-up still matches a fresh run.
    assert backend.decoder.length() == stopped.prompt_tokens + stopped.completion_tokens
    after = [
        *first_turn,
        p.ChatMessage(role="assistant", text=stopped.text),
        p.ChatMessage(role="user", text="Colours?"),
    ]
    continued = answer(backend, after)
    backend.set_static_decode(False)
    assert answer(backend, after).token_ids == continued.token_ids


@pytest.mark.parametrize(
    ("choice", "device", "static"),
    [
        (None, "cpu", False),
        (None, "cuda", True),
        ("generate", "cuda", False),
        ("static", "cpu", True),
        ("Static ", "cpu", True),
        ("fastest", "cpu", False),
    ],
)
def test_the_decode_choice_comes_from_the_environment(monkeypatch, choice, device, static) -> None:
    from engine.backends.local_hf import use_static_decode

    if choice is None:
        monkeypatch.delenv("VISIONDESK_DECODE", raising=False)
    else:
        monkeypatch.setenv("VISIONDESK_DECODE", choice)
    assert use_static_decode(device) is static


def test_the_engine_answers_through_the_static_loop_when_asked(
    tiny_model, picture, monkeypatch
) -> None:
    from tests.engine.harness import EngineHarness, job_id

    chat = dict(model=str(tiny_model("llava")), quant="nf4", device="cpu", sampling=GREEDY)
    question = [p.ChatMessage(role="user", text="Hi", images=[picture])]
    answers = []
    for choice in ("generate", "static"):
        monkeypatch.setenv("VISIONDESK_DECODE", choice)  # the engine process inherits it
        engine = EngineHarness()
        try:
            finished, text = engine.run(
                p.Chat(job_id=job_id(), messages=question, return_token_ids=True, **chat)
            )
            engine.send(p.GetStatus())
            status = engine.next_event()
            while not isinstance(status, p.EngineStatus):
                status = engine.next_event()
        finally:
            engine.close()
        assert finished.result is not None, finished.message
        assert status.loaded is not None and status.loaded.decoding == choice
        answers.append((finished.result["token_ids"], text))
    assert answers[0] == answers[1]


def test_the_decode_step_reads_positions_only_from_buffers_that_outlive_a_conversation(
    tiny_model, tmp_path
) -> None:
    """A captured CUDA graph replays reads from fixed addresses. Qwen2-VL's model assigns a new
    ``rope_deltas`` tensor each conversation, so the step must not read the model's attribute:
    here it is replaced by garbage between prefill and decode, and answers must not change."""
    import torch

    from engine.backends.static_decode import inner_model

    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("qwen2_vl")), "none", "cpu"))
    with torch.no_grad():  # sharper attention: random tiny weights barely look at positions
        for name, module in backend.model.named_modules():
            if "language_model" in name and name.endswith(("q_proj", "k_proj")):
                module.weight.mul_(10.0)
    wide, tall = tmp_path / "wide.png", tmp_path / "tall.png"
    Image.new("RGB", (224, 56), (200, 40, 40)).save(wide)
    Image.new("RGB", (56, 168), (40, 40, 200)).save(tall)
    questions = [
        [p.ChatMessage(role="user", text="What is this?", images=[str(picture)])]
        for picture in (wide, tall)
    ]
    plain = []
    for question in questions:
        backend.prefix_cache.clear()
        plain.append(answer(backend, question).token_ids)
    backend.set_static_decode(True)
    decoder = backend.decoder
    assert decoder is not None
    inner = inner_model(backend.model)
    real: dict[str, Any] = {}
    prefill = decoder.prefill

    def prefill_then_garble(inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if "deltas" in real:
            inner.rope_deltas = real["deltas"]  # what a follow-up's prefill legitimately needs
        logits = prefill(inputs, *args, **kwargs)
        real["deltas"] = inner.rope_deltas
        inner.rope_deltas = torch.full_like(inner.rope_deltas, 999)
        return logits

    decoder.prefill = prefill_then_garble  # type: ignore[method-assign]
    static = [answer(backend, question).token_ids for question in questions]
    assert static == plain


@pytest.mark.parametrize("family", GENERATIVE)
def test_positions_are_right_in_every_turn_with_position_sensitive_attention(
    family, tiny_model, picture
) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "none", "cpu"))
    quirks = quirks_for(backend.resolved.model_type)
    if not quirks.static_decode:
        pytest.skip(f"{family} keeps generate()")
    sharpen_attention(backend.model)
    first_turn, follow_up = two_turns(picture)
    plain_first = answer(backend, first_turn).token_ids
    backend.prefix_cache.clear()
    fresh_follow_up = answer(backend, follow_up).token_ids
    backend.set_static_decode(True)
    assert answer(backend, first_turn).token_ids == plain_first
    reused = answer(backend, follow_up)  # prefilled at an offset, after the cached image
    assert reused.token_ids == fresh_follow_up
    if not quirks.reuse_prefix:
        return
    assert reused.cached_tokens > 0

    # On a GPU a follow-up's text runs through a captured forward, a few tokens at a time, the
    # last piece padded: here the same forward runs eagerly, in pieces of 4 and of 64.
    for chunk in (4, 64):
        backend.set_static_decode(True, chunk=chunk)
        decoder = backend.decoder
        assert decoder is not None and decoder.chunk == chunk
        decoder.max_pieces = 100  # pieces of 4: many of them, to cover their joins
        pieces = ChunkCalls(decoder)
        assert answer(backend, first_turn).token_ids == plain_first
        assert pieces.count == 0, "a first turn with its image is one ordinary prefill"
        chunked = answer(backend, follow_up)
        new_tokens = chunked.prompt_tokens - chunked.cached_tokens
        assert chunked.cached_tokens > 0 and pieces.count == -(-new_tokens // chunk)
        assert chunked.token_ids == fresh_follow_up
        assert decoder.length() == chunked.prompt_tokens + chunked.completion_tokens - 1


class ChunkCalls:
    """Counts the follow-up prefill's pieces."""

    def __init__(self, decoder: Any) -> None:
        self.count = 0
        original = decoder._chunk_forward

        def counted() -> Any:
            self.count += 1
            return original()

        decoder._chunk_forward = counted


def test_follow_up_pieces_work_with_eager_attention_too(tiny_model, picture) -> None:
    """Eager attention adds its mask rather than selecting with it: the pieces' mask is built in
    that form for such models."""
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("qwen2_vl")), "none", "cpu"))
    backend.model.set_attn_implementation("eager")
    sharpen_attention(backend.model)
    first_turn, follow_up = two_turns(picture)
    fresh = answer(backend, follow_up).token_ids
    backend.set_static_decode(True, chunk=4)
    assert backend.decoder is not None and backend.decoder.chunk == 4
    backend.decoder.max_pieces = 100
    pieces = ChunkCalls(backend.decoder)
    answer(backend, first_turn)
    chunked = answer(backend, follow_up)
    assert chunked.cached_tokens > 0 and pieces.count > 1
    assert chunked.token_ids == fresh


def test_a_long_follow_up_is_one_ordinary_prefill(tiny_model, picture) -> None:
    """Each piece reads every weight once: beyond a few pieces one eager prefill is cheaper."""
    from engine.backends.static_decode import MAX_PIECES

    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "none", "cpu"))
    first_turn, _ = two_turns(picture)
    long_text = " ".join(["Please describe every part of the picture in detail."] * 12)
    follow_up = [
        *first_turn,
        p.ChatMessage(role="assistant", text="A blue box on orange."),
        p.ChatMessage(role="user", text=long_text),
    ]
    fresh = answer(backend, follow_up).token_ids
    backend.set_static_decode(True, chunk=8)
    assert backend.decoder is not None
    pieces, prefills = ChunkCalls(backend.decoder), PrefillLengths(backend)
    answer(backend, first_turn)
    reused = answer(backend, follow_up)
    new_tokens = reused.prompt_tokens - reused.cached_tokens
    assert reused.cached_tokens > 0 and new_tokens > 8 * MAX_PIECES
    assert pieces.count == 0 and prefills.lengths[-1] == new_tokens
    assert reused.token_ids == fresh


@pytest.mark.parametrize("family", GENERATIVE)
def test_a_first_turn_padded_to_its_prefill_bucket_answers_like_generate(
    family, tiny_model, picture
) -> None:
    """On a GPU a first turn's language-model prefill replays a graph captured for its length
    rounded up to a bucket, and a one-tile picture's encoder one captured for its pixel shape:
    here the same forwards, through the same buffers, run eagerly, for every family. Two
    conversations: the first one's prefill fills the fresh cache as usual."""
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "none", "cpu"))
    if not quirks_for(backend.resolved.model_type).static_decode:
        pytest.skip(f"{family} keeps generate()")
    sharpen_attention(backend.model)
    first_turn, follow_up = two_turns(picture)
    other_turn, other_follow_up = two_turns(picture, "Describe the picture in a few words.")
    expected = []
    for messages in (first_turn, follow_up, other_turn, other_follow_up):
        backend.prefix_cache.clear()
        expected.append(answer(backend, messages).token_ids)
    prompt = int(backend.build_inputs(other_turn)["input_ids"].shape[-1])
    bucket = 16 if prompt % 16 else 7  # the prompt does not fill its bucket: padding is used
    backend.set_static_decode(True, prefill_bucket=bucket, capture_vision=True)
    decoder = backend.decoder
    assert decoder is not None and decoder.prefill_bucket == bucket

    got, bucketed = [], []
    for messages in (first_turn, follow_up, other_turn, other_follow_up):
        if messages is other_turn:
            backend.prefix_cache.clear()  # a new conversation, as after another picture
        got.append(answer(backend, messages))
        bucketed.append(decoder.prefills_bucketed)
    assert [result.token_ids for result in got] == expected
    last = got[-1]
    assert decoder.length() == last.prompt_tokens + last.completion_tokens - 1
    # The picture's encoder runs through its buffers where its call takes one tile's pixels and
    # nothing else read from a tensor (the others: grids, patch masks, several tiles), once:
    # the second conversation's picture comes from the feature cache.
    assert decoder.visions_buffered == (family in ("llava", "paligemma"))
    if backend.resolved.model_type == "paligemma":
        # Its prefix attends both ways: its own mask, which the bucket's causal one is not.
        assert bucketed == [0, 0, 0, 0]
    else:
        # The fresh cache is written eagerly first; then the follow-up (no captured pieces on
        # the CPU: its text after the cached picture), the new first turn, and its follow-up.
        assert bucketed == [0, 1, 2, 3]


def test_prefill_buckets_keep_a_few_lengths_and_leave_long_prompts_eager(
    tiny_model, picture
) -> None:
    """4-bit weights, several first-turn lengths: each bucket's forward is kept (up to a few),
    a prompt over ``max_prefill`` is one ordinary prefill, and every answer is generate's."""
    from engine.backends.static_decode import MAX_PREFILL_GRAPHS

    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    questions = [
        [p.ChatMessage(role="user", text="Why? " * words, images=[picture])]
        for words in (1, 6, 12, 18, 24, 30, 1)
    ]
    expected = []
    for messages in questions:
        backend.prefix_cache.clear()
        expected.append(answer(backend, messages).token_ids)
    backend.set_static_decode(True, prefill_bucket=8)
    decoder = backend.decoder
    assert decoder is not None
    prompts = [int(backend.build_inputs(m)["input_ids"].shape[-1]) for m in questions]
    decoder.max_prefill = sorted(prompts)[-2]  # the longest prompt stays eager
    got = []
    for messages in questions:
        backend.prefix_cache.clear()
        got.append(answer(backend, messages).token_ids)
    assert got == expected
    # The first write is eager, and so is the prompt over the limit.
    assert decoder.prefills_bucketed == len(questions) - 2
    assert len(decoder._prefills) == MAX_PREFILL_GRAPHS


def test_pictures_of_one_shape_share_the_encoders_buffers_and_answer_like_generate(
    tiny_model, tmp_path
) -> None:
    """Each new picture is copied into the same pixel buffer (on a GPU: the captured encoder's
    input) and answers as ``generate`` does; a picture seen before comes from the feature cache."""
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    pictures = []
    for name, colour in (("red", (200, 30, 30)), ("green", (30, 200, 30))):
        path = tmp_path / f"{name}.png"
        image = Image.new("RGB", (64, 48), colour)
        image.paste((20, 20, 20), (5, 5, 30, 20))
        image.save(path)
        pictures.append([p.ChatMessage(role="user", text="What is this?", images=[str(path)])])
    expected = []
    for question in pictures:
        expected.append(answer(backend, question).token_ids)
    assert expected[0] != expected[1], "the pictures must tell apart"
    backend.forget_images()
    backend.set_static_decode(True, capture_vision=True)
    decoder = backend.decoder
    assert decoder is not None
    got = []
    for question in (*pictures, pictures[0]):
        backend.prefix_cache.clear()
        got.append(answer(backend, question).token_ids)
    assert got == [*expected, expected[0]]
    assert decoder.visions_buffered == 2 and len(decoder._visions) == 1
