"""Which token positions carry loss, per chat-template family, with the real processors.

For every family: the prompt (system, user text, role markers), the image tokens and the padding
are masked; the answer and exactly one end-of-turn token after it are trained; nothing after
that token (Qwen's newline) is; and a tokenizer whose pad token is its EOS still trains the EOS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from engine.finetune.collate import IGNORE, Supervisor, stop_token_ids
from engine.finetune.data import Example, Turn

FAMILIES = [
    "llava",
    "qwen2_vl",
    "qwen2_5_vl",
    "llava_next",
    "llava_onevision",
    "idefics2",
    "idefics3",
    "smolvlm",
    "mllama",
    "internvl",
]


def _supervisor(path: Path) -> Supervisor:
    from transformers import AutoConfig, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    return Supervisor(processor, config, stop_token_ids(str(path), config, processor.tokenizer))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for name, size, colour in (("red", (40, 30), (200, 0, 0)), ("blue", (64, 48), (0, 0, 200))):
        paths[name] = str(folder / f"{name}.png")
        Image.new("RGB", size, colour).save(paths[name])
    return paths


def _prompt_ids(sup: Supervisor, turns: list[Turn]) -> list[int]:
    """The processor's own tokens for the conversation up to the answer (generation prompt on)."""
    from engine.documents.images import load_image

    text = sup.render(turns, add_generation_prompt=True)
    pictures = [load_image(path) for turn in turns for path in turn.images]
    ids = sup.processor(text=[text], images=pictures or None)["input_ids"]
    return list(ids[0])


def _trained(item: Any) -> list[tuple[int, int]]:
    return [
        (i, t)
        for i, (t, label) in enumerate(zip(item.input_ids, item.labels, strict=True))
        if label != IGNORE
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_answer_and_its_end_of_turn_token_carry_loss(
    family: str, tiny_model: Callable[[str], Path], images: dict[str, str]
) -> None:
    sup = _supervisor(tiny_model(family))
    turns = [
        Turn("system", "Answer briefly."),
        Turn("user", "What is shown?", [images["red"]]),
        Turn("assistant", "A red square."),
    ]
    if family == "idefics2":
        turns = turns[1:]  # its template has no system role of its own; the rest is the same
    item = sup.encode(Example(turns, "row 1", "qa"))
    prompt = _prompt_ids(sup, turns[:-1])
    trained = _trained(item)
    positions = [i for i, _ in trained]
    # the prompt is the processor's own tokens, every one masked; training starts right after it
    assert item.input_ids[: len(prompt)] == prompt
    assert all(label == IGNORE for label in item.labels[: len(prompt)])
    assert positions[0] == len(prompt)
    assert positions == list(range(positions[0], positions[-1] + 1))  # one contiguous span
    # the span is the answer, then exactly one end-of-turn token, and nothing after it
    *answer, last = [token for _, token in trained]
    assert last in sup.stop_ids and not set(answer) & sup.stop_ids
    assert sup.tokenizer.decode(answer).strip() == "A red square."
    assert all(label == IGNORE for label in item.labels[positions[-1] + 1 :])
    # image tokens are never trained, and they are really in the sequence
    assert item.image_tokens > 0
    assert not {token for _, token in trained} & sup.image_ids


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3", "mllama"])
def test_every_answer_of_a_conversation_is_trained_and_the_user_turns_between_are_not(
    family: str, tiny_model: Callable[[str], Path], images: dict[str, str]
) -> None:
    sup = _supervisor(tiny_model(family))
    turns = [
        Turn("user", "Colour?", [images["blue"]]),
        Turn("assistant", "Blue."),
        Turn("user", "Are you sure?"),
        Turn("assistant", "Yes, blue."),
    ]
    item = sup.encode(Example(turns, "row 1", "messages"))
    spans: list[list[int]] = []
    previous = -2
    for position, token in _trained(item):
        if position != previous + 1:
            spans.append([])
        spans[-1].append(token)
        previous = position
    assert len(spans) == 2
    for span, answer in zip(spans, ("Blue.", "Yes, blue."), strict=True):
        assert span[-1] in sup.stop_ids
        assert sup.tokenizer.decode(span[:-1]).strip() == answer
    second_prompt = _prompt_ids(sup, turns[:3])
    first_end = item.input_ids.index(spans[0][-1], len(_prompt_ids(sup, turns[:1])))
    assert all(label == IGNORE for label in item.labels[first_end + 1 : len(second_prompt)])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_padding_is_masked_by_position_even_when_pad_is_the_eos_token(
    family: str, tiny_model: Callable[[str], Path], images: dict[str, str]
) -> None:
    sup = _supervisor(tiny_model(family))
    tokenizer = sup.tokenizer
    eos = tokenizer.convert_tokens_to_ids("</s>" if family == "llava" else "<|im_end|>")
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos)  # the classic pad == eos setup
    assert tokenizer.pad_token_id == eos
    short = Example([Turn("user", "Hi?", [images["red"]]), Turn("assistant", "Red.")], "a", "qa")
    long = Example(
        [
            Turn("user", "Describe it in detail, please.", [images["red"]]),
            Turn("assistant", "A red square on nothing at all, nothing else."),
        ],
        "b",
        "qa",
    )
    batch = sup.collate([short, long])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    length = int(mask[0].sum())
    assert length < ids.shape[1]  # the short row really is padded
    assert ids[0, length:].tolist() == [eos] * (ids.shape[1] - length)  # padded with the EOS id
    assert labels[0, length:].tolist() == [IGNORE] * (ids.shape[1] - length)  # and masked
    trained_eos = [i for i in range(length) if labels[0, i] == eos]
    assert len(trained_eos) == 1  # the real end of the answer is still learned
    assert labels[1, int(mask[1].sum()) - 1 :].max() == eos or eos in labels[1].tolist()
    assert (labels[mask == 0] == IGNORE).all()


def test_a_template_without_an_end_token_gets_the_eos_appended_and_trained(
    tiny_model: Callable[[str], Path], images: dict[str, str]
) -> None:
    sup = _supervisor(tiny_model("llava"))
    sup.processor.chat_template = (
        "{% for m in messages %}{{ m['role'].upper() }}: "
        "{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>\n{% else %}{{ p['text'] }}"
        "{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT: {% endif %}"
    )
    item = sup.encode(
        Example([Turn("user", "Hi?", [images["red"]]), Turn("assistant", "Red.")], "a", "qa")
    )
    trained = [token for _, token in _trained(item)]
    assert trained[-1] == sup.tokenizer.eos_token_id
    assert item.text.endswith(sup.tokenizer.eos_token)


def test_the_what_will_be_trained_view_marks_prompt_image_and_trained_tokens(
    tiny_model: Callable[[str], Path], images: dict[str, str]
) -> None:
    sup = _supervisor(tiny_model("qwen2_vl"))
    view = sup.token_view(
        Example(
            [Turn("user", "What is shown?", [images["red"]]), Turn("assistant", "A red square.")],
            "a",
            "qa",
        )
    )
    kinds = [span.kind for span in view]
    assert kinds == ["prompt", "image", "prompt", "trained", "prompt"]
    image = view[1]
    assert image.text == f"[image: {image.count} tokens]" and image.count > 1
    assert view[3].text == "A red square.<|im_end|>"
    assert view[-1].text == "\n"  # the template's newline after the end-of-turn is not trained


def test_an_example_too_long_for_the_limit_is_left_out_and_reported_never_cut(
    tiny_model: Callable[[str], Path], tmp_path: Path
) -> None:
    from engine.finetune.plan import build_plan
    from engine.protocol import finetune as pf
    from tests.engine.test_finetune_data import make_colour_dataset

    data = make_colour_dataset(tmp_path / "data", 6)
    (data / "red.txt").write_text("A plain red square. " * 12)
    plan = build_plan(str(tiny_model("llava")), str(data), pf.FinetuneSettings(max_length=80)).plan
    assert plan.train_rows == 5
    [skipped] = plan.skipped_rows
    assert skipped.kind == "too_long" and "red.png" in skipped.message
    assert "image tokens" in skipped.message and "rather than cut" in skipped.message
    assert plan.longest_tokens <= 80 and plan.longest_image_tokens == 16
