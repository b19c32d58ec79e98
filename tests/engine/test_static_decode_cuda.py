"""On an NVIDIA GPU: the captured decode step and the captured prefills (a first turn's, a
follow-up's) give the answers ``generate`` gives. Skipped without CUDA; the CPU tests in ``test_static_decode.py`` pin the
same forward passes run eagerly, these pin their capture and replay.

    python -m pytest tests/engine/test_static_decode_cuda.py
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import protocol as p
from engine.backends.local_hf import LocalHFBackend
from engine.runtime import LoadSpec
from tests.engine.test_prefix_cache import sharpen_attention
from tests.engine.test_static_decode import answer, two_turns

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FAMILIES = ["llava", "qwen2_vl"]  # plain positions, and positions that carry the image's offset


def plain_answers(backend: LocalHFBackend, turns: list[list[p.ChatMessage]]) -> list[list[int]]:
    backend.set_static_decode(False)
    answers = []
    for messages in turns:
        backend.prefix_cache.clear()
        answers.append(answer(backend, messages).token_ids)
    return answers


@pytest.mark.parametrize("quant", ["nf4", "none"])
@pytest.mark.parametrize("family", FAMILIES)
def test_captured_step_and_follow_up_answer_like_generate(
    family: str, quant: str, tiny_model: Any, picture: str
) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), quant, "cuda"))
    if quant == "none":
        sharpen_attention(backend.model, factor=4.0)  # a replay that misreads positions shows
    one = two_turns(picture, "What is this?")
    two = two_turns(picture, "Describe the picture.")
    three = two_turns(picture, "What is it?")  # one's prefill bucket: its graph is replayed
    expected = plain_answers(backend, [*one, *two, *three])

    assert backend.set_static_decode(True)
    decoder = backend.decoder
    assert decoder is not None and decoder.use_graphs and decoder.chunk > 0
    got = []
    for first, follow_up in (one, two, three):
        backend.prefix_cache.clear()  # each first turn prefills its picture and question
        got.append(answer(backend, first).token_ids)
        reused = answer(backend, follow_up)
        assert reused.cached_tokens > 0
        got.append(reused.token_ids)
    assert decoder.graph_error is None and decoder.chunk_error is None
    assert decoder.prefill_error is None
    assert decoder.steps_replayed > 0
    assert decoder.chunks_replayed > 0, "the second follow-up replays the captured prefill"
    # The first conversation fills the fresh cache eagerly, the second captures its first turn's
    # prefill, the third replays it.
    assert decoder.prefills_replayed > 0
    assert backend.info().decoding == "cuda-graphs"
    assert got == expected


def test_warm_up_captures_both_graphs_before_the_first_question(
    tiny_model: Any, picture: str
) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("qwen2_vl")), "nf4", "cuda"))
    first, follow_up = two_turns(picture, "What is this?")
    expected = plain_answers(backend, [first, follow_up])
    backend.set_static_decode(True)
    decoder = backend.decoder
    assert decoder is not None
    messages: list[str] = []
    backend.warm_up(messages.append)
    assert messages == ["Preparing fast decoding"]
    assert decoder._step.captured and decoder._extend.captured
    assert any(prefill.captured.captured for prefill in decoder._prefills.values())
    replayed = decoder.chunks_replayed
    assert [answer(backend, first).token_ids, answer(backend, follow_up).token_ids] == expected
    assert decoder.chunks_replayed > replayed


@pytest.mark.parametrize("quant", ["nf4", "none"])
def test_a_captured_image_encoder_answers_like_generate_for_each_new_picture(
    quant: str, tiny_model: Any, tmp_path: Any
) -> None:
    """LLaVA's encoder takes one picture's pixels alone: captured for their shape, it is
    replayed for every new picture of that shape, and its outputs are copied out (the feature
    cache keeps them while the next replay rewrites the graph's)."""
    from PIL import Image

    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), quant, "cuda"))
    questions = []
    for index, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 90))):
        path = tmp_path / f"{index}.png"
        image = Image.new("RGB", (64, 48), colour)
        image.paste((240, 240, 240), (5, 5, 30, 20))
        image.save(path)
        questions.append([p.ChatMessage(role="user", text="What is this?", images=[str(path)])])
    expected = plain_answers(backend, questions)
    backend.forget_images()
    assert backend.set_static_decode(True)
    decoder = backend.decoder
    assert decoder is not None and decoder.capture_vision
    got = []
    for question in [*questions, questions[0]]:  # the last one from the feature cache
        backend.prefix_cache.clear()
        got.append(answer(backend, question).token_ids)
    assert decoder.vision_error is None
    assert decoder.visions_replayed >= 2  # the first picture captures, the next ones replay
    assert got == [*expected, expected[0]]
