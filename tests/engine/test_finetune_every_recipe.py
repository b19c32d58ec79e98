"""Every recipe trains on a 4-bit base and its adapter is applied by the chat backend.

Projector only (no LoRA: the projector's own weights), vision + language LoRA, and language LoRA +
projector on Qwen2-VL, whose projector lives inside its vision module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.finetune.plan import build_plan
from engine.finetune.runs import create_run
from engine.finetune.trainer_process import run_child
from engine.protocol import finetune as pf
from tests.engine.test_finetune_data import make_colour_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_dataset(tmp_path_factory.mktemp("colours") / "data", 8)


def _answer(backend: Any, image: str) -> list[int]:
    from engine import protocol as p

    result = backend.chat(
        [p.ChatMessage(role="user", text="Describe this image.", images=[image])],
        p.Sampling(max_new_tokens=6),
        on_text=lambda _text: None,
        cancelled=lambda: False,
    )
    return list(result.token_ids)


@pytest.mark.parametrize(
    ("family", "recipe", "files"),
    [
        ("llava", "projector", {"projector.safetensors"}),
        ("llava", "vision_language", {"adapter_model.safetensors"}),
        ("qwen2_vl", "language", {"adapter_model.safetensors"}),
    ],
)
def test_each_recipe_trains_in_4_bit_and_its_adapter_changes_the_chat_answer(
    family: str,
    recipe: str,
    files: set[str],
    tiny_model: Callable[[str], Path],
    data: Path,
    tmp_path: Path,
) -> None:
    from engine.backends.local_hf import LocalHFBackend
    from engine.runtime import LoadSpec

    model = str(tiny_model(family))
    settings = pf.FinetuneSettings(
        recipe=recipe, quant="nf4", max_steps=4, learning_rate=5e-3, trial_step=False
    )
    create_run(build_plan(model, str(data), settings), str(tmp_path / "run"), model, settings)
    events: list[dict[str, Any]] = []
    finished = run_child(tmp_path / "run", [], events.append, lambda: False)
    assert finished["reason"] == "done" and finished["step"] == 4
    adapter = tmp_path / "run" / "adapter"
    assert files <= {path.name for path in adapter.iterdir()}

    base = LocalHFBackend.load(LoadSpec(model=model, quant="nf4", device="cpu"))
    tuned = LocalHFBackend.load(
        LoadSpec(model=model, quant="nf4", device="cpu", adapter=str(adapter))
    )
    image = str(data / "red.png")
    assert _answer(tuned, image) != _answer(base, image)
    modules = dict(tuned.model.named_modules())
    projector = [
        name for name in modules if name.endswith(("multi_modal_projector", "visual.merger"))
    ]
    assert projector, "the projector kept whole under the 4-bit base"
    for name in projector:  # the adapter's projector could not sit on 4-bit layers
        assert not any(type(m).__name__ == "Linear4bit" for m in modules[name].modules())
    assert any(type(m).__name__ == "Linear4bit" for m in modules.values())  # the rest is 4-bit
