"""Instructions (a system turn) reach the model, whether or not its chat template has the role."""

from __future__ import annotations

import pytest

from engine.backends.local_hf import LocalHFBackend
from engine.protocol import ChatMessage
from engine.runtime import LoadSpec

pytestmark = pytest.mark.slow

INSTRUCTIONS = "Answer in French."
# A template like those of models trained without a system role: it refuses one.
NO_SYSTEM_ROLE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def backend(tiny_model) -> LocalHFBackend:
    return LocalHFBackend.load(LoadSpec(str(tiny_model("qwen2_vl")), "none", "cpu"))


def prompt_text(backend: LocalHFBackend, messages: list[ChatMessage]) -> str:
    inputs = backend.build_inputs(messages, on_device=False)
    return str(backend.tokenizer.decode(inputs["input_ids"][0]))


def test_instructions_come_first_in_the_templates_own_system_turn(backend) -> None:
    text = prompt_text(
        backend, [ChatMessage("system", INSTRUCTIONS), ChatMessage("user", "What is this?")]
    )
    assert "<|im_start|>system\nAnswer in French.<|im_end|>" in text
    assert text.index(INSTRUCTIONS) < text.index("What is this?")


def test_a_template_without_a_system_role_gets_them_in_the_first_question(backend) -> None:
    original = backend.processor.chat_template
    backend.processor.chat_template = NO_SYSTEM_ROLE
    try:
        messages = [
            ChatMessage("system", INSTRUCTIONS),
            ChatMessage("user", "What is this?"),
            ChatMessage("assistant", "A cat."),
            ChatMessage("user", "And its colour?"),
        ]
        text = prompt_text(backend, messages)
        assert "<|im_start|>system" not in text
        assert f"<|im_start|>user\n{INSTRUCTIONS}\n\nWhat is this?<|im_end|>" in text
        assert "<|im_start|>user\nAnd its colour?<|im_end|>" in text  # only the first
    finally:
        backend.processor.chat_template = original
