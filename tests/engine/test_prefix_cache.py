"""Follow-up turns reuse the conversation's KV cache: same tokens, no second image encoding."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from engine import protocol as p
from engine.backends.local_hf import LocalHFBackend
from engine.models.families import quirks_for
from engine.runtime import LoadSpec
from engine.testing import AUTO_CLASS, FAMILIES, PROMPT_FORMAT

CHAT_FAMILIES = [
    f
    for f in FAMILIES
    if AUTO_CLASS[f] == "AutoModelForImageTextToText" and PROMPT_FORMAT[f] == "chat_template"
]
GREEDY = p.Sampling(max_new_tokens=10)


def answer(backend: LocalHFBackend, messages: list[p.ChatMessage]) -> Any:
    return backend.chat(messages, GREEDY, on_text=lambda _t: None, cancelled=lambda: False)


class VisionCalls:
    """Counts forward calls of the vision tower, whatever the family calls it."""

    def __init__(self, model: Any) -> None:
        self.count = 0
        inner = getattr(model, "model", model)
        names = ("vision_tower", "visual", "vision_model")
        tower = next(getattr(inner, n) for n in names if getattr(inner, n, None) is not None)
        tower.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.count += 1


def sharpen_attention(model: Any, factor: float = 10.0) -> None:
    """Scale the language model's query and key projections so attention depends strongly on
    position: with random tiny weights it is nearly uniform, and a wrong position would pass."""
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if ("language_model" in name or "text_model" in name) and name.endswith(
                ("q_proj", "k_proj")
            ):
                module.weight.mul_(factor)


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_a_follow_up_reuses_the_cache_and_answers_exactly_like_a_fresh_run(
    family, tiny_model, picture
) -> None:
    if family == "mllama":
        pytest.skip("mllama's image enters through cross-attention: its cache is not reused")
    assert quirks_for(family).reuse_prefix
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "none", "cpu"))
    sharpen_attention(backend.model)  # so that a follow-up at a wrong position would show
    vision = VisionCalls(backend.model)
    first_turn = [p.ChatMessage(role="user", text="What is this?", images=[picture])]
    first = answer(backend, first_turn)
    assert vision.count >= 1 and first.cached_tokens == 0
    encoded = vision.count

    follow_up = [
        *first_turn,
        p.ChatMessage(role="assistant", text="A blue box on orange."),
        p.ChatMessage(role="user", text="And its colours?"),
    ]
    reused = answer(backend, follow_up)
    assert vision.count == encoded, "the image was encoded again"
    assert reused.cached_tokens > 0
    # Only the new tokens were prefilled: the reused part covers at least the first prompt.
    assert (
        reused.prompt_tokens - reused.cached_tokens < reused.prompt_tokens - first.prompt_tokens + 2
    )

    backend.prefix_cache.clear()
    backend.feature_cache.clear()  # a truly fresh run encodes the image again
    fresh = answer(backend, follow_up)
    assert fresh.cached_tokens == 0 and vision.count > encoded
    assert reused.token_ids == fresh.token_ids


@pytest.mark.parametrize("static", [False, True], ids=["generate", "static-loop"])
def test_editing_an_earlier_message_invalidates_what_follows_and_matches_a_fresh_run(
    tiny_model, picture, static
) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("qwen2_vl")), "nf4", "cpu"))
    backend.set_static_decode(static)
    conversation = [
        p.ChatMessage(role="user", text="Describe the picture.", images=[picture]),
        p.ChatMessage(role="assistant", text="Two colours."),
        p.ChatMessage(role="user", text="Which ones?"),
    ]
    answer(backend, conversation)
    edited = [conversation[0], p.ChatMessage(role="assistant", text="Shapes."), conversation[2]]
    after_edit = answer(backend, edited)
    assert 0 < after_edit.cached_tokens < after_edit.prompt_tokens
    backend.set_static_decode(False)  # a fresh run: plain generate with no cache at all
    assert answer(backend, edited).token_ids == after_edit.token_ids


def test_a_different_image_is_never_served_from_the_cache(tiny_model, picture, tmp_path) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    vision = VisionCalls(backend.model)
    answer(backend, [p.ChatMessage(role="user", text="What is this?", images=[picture])])
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 48), (10, 200, 10)).save(other)
    before = vision.count
    result = answer(
        backend, [p.ChatMessage(role="user", text="What is this?", images=[str(other)])]
    )
    assert result.cached_tokens == 0 and vision.count > before


def test_the_cache_is_dropped_when_it_exceeds_its_budget(tiny_model, picture) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    backend.prefix_cache.budget_bytes = 16
    first_turn = [p.ChatMessage(role="user", text="What is this?", images=[picture])]
    answer(backend, first_turn)
    follow_up = [
        *first_turn,
        p.ChatMessage(role="assistant", text="x"),
        p.ChatMessage(role="user", text="y"),
    ]
    assert answer(backend, follow_up).cached_tokens == 0


def test_the_engine_reports_cached_tokens_for_a_follow_up(tiny_model, picture) -> None:
    from tests.engine.harness import EngineHarness, job_id

    engine = EngineHarness()
    try:
        chat = dict(model=str(tiny_model("llava")), quant="nf4", device="cpu", sampling=GREEDY)
        first_turn = [p.ChatMessage(role="user", text="Hi", images=[picture])]
        first, text = engine.run(p.Chat(job_id=job_id(), messages=first_turn, **chat))
        follow_up = [
            *first_turn,
            p.ChatMessage(role="assistant", text=text),
            p.ChatMessage(role="user", text="More?"),
        ]
        second, _ = engine.run(p.Chat(job_id=job_id(), messages=follow_up, **chat))
        assert first.result and second.result
        assert first.result["cached_tokens"] == 0 and second.result["cached_tokens"] > 0
    finally:
        engine.close()


class FailingForward:
    """The language model's forward, out of device memory on the calls numbered in ``fail``."""

    def __init__(self, backend: LocalHFBackend, fail: Any) -> None:
        from engine.backends.static_decode import inner_model

        self.calls = 0
        language_model = inner_model(backend.model).language_model
        original = language_model.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            import torch

            self.calls += 1
            if self.calls in fail:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return original(*args, **kwargs)

        language_model.forward = forward


def test_out_of_memory_gives_back_what_earlier_turns_kept_and_tries_once_more(
    tiny_model, picture
) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    first_turn = [p.ChatMessage(role="user", text="What is this?", images=[picture])]
    follow_up = [
        *first_turn,
        p.ChatMessage(role="assistant", text="A box."),
        p.ChatMessage(role="user", text="And its colours?"),
    ]
    fresh = answer(backend, follow_up).token_ids
    backend.forget_images()
    answer(backend, first_turn)  # leaves its KV cache and the image's features behind
    assert backend.feature_cache.total_bytes() > 0
    failing = FailingForward(backend, fail={1})
    retried = answer(backend, follow_up)
    assert retried.token_ids == fresh
    assert retried.cached_tokens == 0, "the kept conversation was given back before the retry"
    assert failing.calls == 1 + retried.completion_tokens  # the failed prefill, then the answer


@pytest.mark.parametrize(("fail", "calls"), [(range(1, 99), 2), ({3}, 3)])
def test_out_of_memory_that_persists_or_comes_mid_answer_is_reported(
    tiny_model, picture, fail, calls
) -> None:
    """Tried once more at most, and never once text has been streamed."""
    from engine.errors import EngineError

    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    failing = FailingForward(backend, fail=fail)
    with pytest.raises(EngineError) as raised:
        answer(backend, [p.ChatMessage(role="user", text="What is this?", images=[picture])])
    assert raised.value.code == "out_of_memory"
    assert failing.calls == calls  # the third call comes after two tokens: no retry then


def test_a_constrained_answer_retried_after_out_of_memory_is_the_same_valid_json(
    tiny_model, picture
) -> None:
    """The failure comes after the grammar chose the first token but before anything was
    streamed (the static loop queues a step first): the retry starts the grammar afresh."""
    import json

    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    backend.set_static_decode(True)
    assert backend.decoder is not None
    backend.decoder.ready = lambda: True  # type: ignore[method-assign]
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 12}, "boxes": {"type": "integer"}},
        "required": ["colour", "boxes"],
    }
    question = [p.ChatMessage(role="user", text="Describe it as JSON.", images=[picture])]
    sampling = p.Sampling(max_new_tokens=60)

    def ask() -> Any:
        return backend.chat(
            question, sampling, on_text=lambda _t: None, cancelled=lambda: False,
            json_schema=schema,
        )  # fmt: skip

    expected = ask()
    backend.forget_images()
    failing = FailingForward(backend, fail={2})
    retried = ask()
    assert failing.calls > 2
    assert retried.token_ids == expected.token_ids
    assert set(json.loads(retried.text)) == {"colour", "boxes"}
