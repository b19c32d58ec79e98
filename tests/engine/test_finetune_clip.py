"""Contrastive LoRA of a CLIP/SigLIP search model: retrieval improves, embeddings stay normalised,
the temperature stays clamped, and the merged model is a folder the search index can use."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.finetune.clip_lora import MAX_LOGIT_SCALE, contrastive_loss, embed_rows, recall_at_k
from engine.finetune.plan import build_plan
from engine.finetune.runs import create_run
from engine.finetune.trainer_process import run_child
from engine.finetune.validate import read_examples
from engine.protocol import finetune as pf
from tests.engine.test_finetune_data import make_colour_dataset

pytestmark = pytest.mark.slow


def train(
    model: Path, data: Path, out: Path, **settings: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = pf.FinetuneSettings(**settings)
    ctx = build_plan(str(model), str(data), values)
    assert ctx.plan.recipe == "contrastive"
    create_run(ctx, str(out), str(model), values)
    events: list[dict[str, Any]] = []
    finished = run_child(out, [], events.append, lambda: False)
    return finished, events


@pytest.fixture(scope="module")
def clip_run(
    tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    data = make_colour_dataset(tmp_path_factory.mktemp("pairs") / "data", 8)
    out = tmp_path_factory.mktemp("runs") / "clip"
    finished, events = train(tiny_model("clip"), data, out, epochs=30, learning_rate=1e-3)
    return {"finished": finished, "events": events, "run": out, "data": data}


def test_recall_on_the_training_pairs_rises_and_the_loss_falls(clip_run: dict[str, Any]) -> None:
    finished = clip_run["finished"]
    assert finished["reason"] == "done" and finished["step"] == 30
    evals = [e["eval_loss"] for e in clip_run["events"] if e["event"] == "eval"]
    assert evals[-1] < 0.5 * evals[0]
    evaluation = run_child(clip_run["run"], ["--evaluate", "{}"], lambda e: None, lambda: False)[
        "evaluation"
    ]
    assert evaluation["kind"] == "retrieval" and evaluation["on"] == "training_rows"
    base, adapted = evaluation["metrics"]["base"], evaluation["metrics"]["adapter"]
    assert adapted["image_to_text_r@1"] > base["image_to_text_r@1"]
    assert adapted["text_to_image_r@1"] > base["text_to_image_r@1"]
    assert adapted["image_to_text_r@1"] >= 0.75
    assert evaluation["adapter_loss"] < evaluation["base_loss"]


def test_the_merged_model_gives_normalised_embeddings_and_the_adapted_ranking(
    clip_run: dict[str, Any],
) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoProcessor

    merged = clip_run["run"] / "merged"
    assert (merged / "config.json").is_file()
    model = AutoModel.from_pretrained(merged)
    processor = AutoProcessor.from_pretrained(merged)
    rows = read_examples(clip_run["run"] / "data" / "train.jsonl")
    images, texts = embed_rows(model, processor, rows, "cpu", torch.float32)
    assert torch.allclose(images.norm(dim=-1), torch.ones(len(rows)), atol=1e-5)
    assert torch.allclose(texts.norm(dim=-1), torch.ones(len(rows)), atol=1e-5)
    assert recall_at_k(images, texts)["image_to_text_r@1"] >= 0.75
    scale = load_file(str(clip_run["run"] / "adapter" / "logit_scale.safetensors"))["logit_scale"]
    assert float(scale) <= MAX_LOGIT_SCALE + 1e-6
    assert float(model.logit_scale.detach()) == pytest.approx(
        float(scale)
    )  # merged with the temperature


def test_the_logit_scale_is_clamped_at_100() -> None:
    import torch

    images = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    runaway = torch.tensor(math.log(1e4), requires_grad=True)
    clamped = contrastive_loss(images, images, runaway)
    at_cap = contrastive_loss(images, images, torch.tensor(MAX_LOGIT_SCALE))
    assert torch.isclose(clamped, at_cap)
    assert MAX_LOGIT_SCALE == pytest.approx(math.log(100.0))


def test_siglip_trains_with_the_same_recipe(
    tiny_model: Callable[[str], Path], tmp_path: Path
) -> None:
    data = make_colour_dataset(tmp_path / "data", 8)
    finished, events = train(
        tiny_model("siglip"),
        data,
        tmp_path / "run",
        epochs=10,
        learning_rate=1e-3,
        trial_step=False,
    )
    assert finished["reason"] == "done"
    evals = [e["eval_loss"] for e in events if e["event"] == "eval"]
    assert evals[-1] < evals[0]
    assert (tmp_path / "run" / "merged" / "config.json").is_file()


def test_the_search_index_is_rebuilt_with_the_adapted_model_and_finds_by_caption(
    clip_run: dict[str, Any], tmp_path: Path
) -> None:
    from engine.protocol import search as ps
    from tests.engine.harness import EngineHarness, job_id

    images = tmp_path / "photos"
    images.mkdir()
    for source in sorted(clip_run["data"].glob("*.png")):
        (images / source.name).write_bytes(source.read_bytes())
    engine = EngineHarness()
    try:
        merged = str(clip_run["run"] / "merged")
        index = ps.IndexFolders(
            job_id=job_id(),
            data_dir=str(tmp_path / "data"),
            model=merged,
            folders=[str(images)],
            workers=1,
        )
        finished, _ = engine.run(index)
        assert finished.reason == "done", finished.message
        found = 0
        for colour in ("red", "green", "blue", "yellow", "purple", "orange", "black", "white"):
            query, _ = engine.run(
                ps.SearchQuery(
                    job_id=job_id(),
                    data_dir=str(tmp_path / "data"),
                    text=f"A plain {colour} square.",
                    model=merged,
                    top_k=1,
                )
            )
            assert query.reason == "done", query.message
            [hit] = ps.decode_hits(query.result)
            found += Path(hit.path).stem == colour
        assert found >= 6  # the adapted model finds (nearly) every picture by its own caption
    finally:
        engine.close()


def test_the_two_towers_train_at_their_own_rates_with_a_learnable_temperature(
    tiny_model: Callable[[str], Path], tmp_path: Path
) -> None:
    import threading

    from engine.finetune.clip_lora import ContrastiveTrainer
    from engine.finetune.config import TrainConfig

    data = make_colour_dataset(tmp_path / "data", 8)
    settings = pf.FinetuneSettings(learning_rate=1e-4, vision_learning_rate=3e-5)
    create_run(
        build_plan(str(tiny_model("clip")), str(data), settings),
        str(tmp_path / "run"),
        "clip",
        settings,
    )
    trainer = ContrastiveTrainer(
        TrainConfig.load(tmp_path / "run"), lambda event: None, threading.Event()
    )
    trainer.setup()
    groups = {group["lr"]: group["params"] for group in trainer.optimizer.param_groups}
    assert set(groups) == {1e-4, 3e-5}
    names = {id(param): name for name, param in trainer.model.named_parameters()}
    vision = [names[id(param)] for param in groups[3e-5]]
    text = [names[id(param)] for param in groups[1e-4]]
    assert vision and all(".vision_model." in name and "lora_" in name for name in vision)
    assert all(
        ".text_model." in name and "lora_" in name or name.endswith("logit_scale") for name in text
    )
    assert any(name.endswith("logit_scale") for name in text)  # the temperature is learned
