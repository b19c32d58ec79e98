"""Recipes: LoRA targets resolved by module path, never landing in the vision tower by accident;
defaults chosen with a reason each, and a person's own values kept and marked as theirs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import BadInput
from engine.finetune import recipes
from engine.finetune.parts import part_of
from engine.protocol import finetune as pf


@pytest.mark.parametrize(
    "family", ["llava", "qwen2_vl", "qwen2_5_vl", "idefics2", "idefics3", "mllama", "internvl"]
)
def test_language_lora_targets_every_language_linear_and_nothing_in_vision_or_projector(
    family: str, tiny_model: Callable[[str], Path]
) -> None:
    facts = recipes.model_facts(str(tiny_model(family)))
    regex, modules_to_save, vision_prefixes = recipes.targets(facts, "language")
    linears = {name for names in facts.parts.linears.values() for name in names}
    hit = {name for name in linears if re.fullmatch(regex, name)}
    assert hit == set(facts.parts.linears["language"]) and hit
    assert all(part_of(name) == "language" for name in hit)
    assert "lm_head" not in hit
    # bare names would have matched these: the vision blocks' and the resampler's own q/k/v/MLP
    same_leaf = {
        n for n in linears - hit if n.rsplit(".", 1)[-1] in {"q_proj", "gate_proj", "k_proj"}
    }
    if family in ("qwen2_5_vl", "idefics2", "idefics3", "mllama"):
        assert same_leaf, "the test needs a family where bare layer names are ambiguous"
    assert not same_leaf & hit
    assert modules_to_save == facts.parts.roots["projector"] and modules_to_save
    assert all(part_of(name) == "projector" for name in modules_to_save)


def test_qwen_projector_is_found_inside_the_visual_module(
    tiny_model: Callable[[str], Path],
) -> None:
    facts = recipes.model_facts(str(tiny_model("qwen2_vl")))
    assert facts.parts.roots["projector"] == ["model.visual.merger"]
    assert facts.parts.roots["vision"] == ["model.visual"]
    assert set(facts.parts.skip_quantization()) == {
        "lm_head",
        "model.visual",
        "model.visual.merger",
    }


def test_vision_language_recipe_adds_the_vision_tower_at_a_lower_rate(
    tiny_model: Callable[[str], Path],
) -> None:
    facts = recipes.model_facts(str(tiny_model("llava")))
    regex, modules_to_save, vision = recipes.targets(facts, "vision_language")
    hit = {n for names in facts.parts.linears.values() for n in names if re.fullmatch(regex, n)}
    assert hit == set(facts.parts.linears["language"]) | set(facts.parts.linears["vision"])
    assert modules_to_save == [] and vision == ["model.vision_tower"]
    resolver, values = recipes.choose(
        facts, pf.FinetuneSettings(recipe="vision_language"), 100, 16, 60
    )
    assert values["vision_learning_rate"] == pytest.approx(values["learning_rate"] / 5)
    counts = recipes.trainable_counts(facts, "vision_language", 16)
    assert counts["vision"] > 0 and counts["language"] > 0 and counts["projector"] == 0


def test_projector_only_recipe_trains_no_lora(tiny_model: Callable[[str], Path]) -> None:
    facts = recipes.model_facts(str(tiny_model("llava")))
    regex, modules_to_save, _ = recipes.targets(facts, "projector")
    assert regex == "" and modules_to_save == ["model.multi_modal_projector"]
    counts = recipes.trainable_counts(facts, "projector", 16)
    assert counts == {"language": 0, "vision": 0, "projector": facts.parts.params["projector"]}


def test_every_default_carries_a_reason_and_user_values_are_marked_as_theirs(
    tiny_model: Callable[[str], Path],
) -> None:
    facts = recipes.model_facts(str(tiny_model("llava")))
    settings = pf.FinetuneSettings(rank=8, learning_rate=1e-4, device="cpu")
    resolver, values = recipes.choose(
        facts, settings, train_rows=400, eval_rows=20, longest_tokens=300
    )
    choices = resolver.choices
    assert all(choice.reason for choice in choices.values())
    assert (choices["rank"].value, choices["rank"].auto, choices["rank"].reason) == (
        8,
        False,
        "set by you",
    )
    assert choices["alpha"].value == 8 and choices["alpha"].auto  # follows the chosen rank
    assert values["learning_rate"] == 1e-4 and not choices["learning_rate"].auto
    assert values["dropout"] == 0.0 and values["quant"] == "none"  # CPU: no 4-bit by default
    assert (
        values["optimizer"] == "adamw"
        and "8-bit AdamW needs a CUDA GPU" in choices["optimizer"].reason
    )
    assert values["epochs"] == 3 and "400 rows" in choices["epochs"].reason
    assert values["batch_size"] * values["grad_accum"] == 8  # effective batch 8 for 400 rows
    assert values["total_steps"] == values["epochs"] * values["steps_per_epoch"] == 3 * 50
    assert values["early_stopping_patience"] == 3 and values["max_length"] == 300
    assert "nothing is cut" in choices["max_length"].reason


@pytest.mark.parametrize("rows", [6, 40, 400, 2000])
def test_the_effective_batch_named_is_the_one_trained_with(
    rows: int, tiny_model: Callable[[str], Path]
) -> None:
    facts = recipes.model_facts(str(tiny_model("llava")))
    settings = pf.FinetuneSettings(device="cpu")
    resolver, values = recipes.choose(
        facts, settings, train_rows=rows, eval_rows=0, longest_tokens=300
    )
    effective = values["batch_size"] * values["grad_accum"]
    assert f"effective batch of {effective}" in resolver.choices["grad_accum"].reason
    assert effective == {6: 2, 40: 10, 400: 8, 2000: 16}[rows]  # never below one batch of 2


@pytest.mark.parametrize(("rows", "epochs"), [(50, 3), (999, 3), (1000, 2), (4999, 2), (5000, 1)])
def test_epochs_follow_the_data_size(
    rows: int, epochs: int, tiny_model: Callable[[str], Path]
) -> None:
    facts = recipes.model_facts(str(tiny_model("llava")))
    _, values = recipes.choose(facts, pf.FinetuneSettings(), rows, 16, 60)
    assert values["epochs"] == epochs


def test_max_steps_caps_the_run_and_the_plan_says_so(tiny_model: Callable[[str], Path]) -> None:
    facts = recipes.model_facts(str(tiny_model("llava")))
    resolver, values = recipes.choose(facts, pf.FinetuneSettings(max_steps=7), 400, 16, 60)
    assert (
        values["total_steps"] == 7
        and "capped at 7 by you" in resolver.choices["total_steps"].reason
    )


def test_search_models_get_the_contrastive_recipe_on_both_towers(
    tiny_model: Callable[[str], Path],
) -> None:
    facts = recipes.model_facts(str(tiny_model("clip")))
    assert facts.kind == "contrastive"
    resolver, values = recipes.choose(facts, pf.FinetuneSettings(), 40, 0, 10)
    assert values["recipe"] == "contrastive" and values["grad_accum"] == 1
    regex, _, vision = recipes.targets(facts, "contrastive")
    hit = {n for names in facts.parts.linears.values() for n in names if re.fullmatch(regex, n)}
    assert {n.split(".")[0] for n in hit} == {"text_model", "vision_model"}
    assert all(n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "out_proj") for n in hit)
    assert vision == ["vision_model"]
    vlm = recipes.model_facts(str(tiny_model("llava")))
    with pytest.raises(BadInput, match="CLIP/SigLIP"):
        recipes.choose(vlm, pf.FinetuneSettings(recipe="contrastive"), 40, 0, 10)


def test_the_memory_plan_follows_quantisation_batch_and_checkpointing(
    tiny_model: Callable[[str], Path],
) -> None:
    from engine.finetune.plan import _verdict, estimate_memory

    facts = recipes.model_facts(str(tiny_model("llava")))
    _, values = recipes.choose(facts, pf.FinetuneSettings(device="cpu"), 400, 16, 600)

    def total(**changes: object) -> dict[str, int]:
        items, whole = estimate_memory(facts, {**values, **changes}, 10_000, 600, 576)
        return {item.name: item.bytes for item in items} | {"total": whole}

    full, nf4 = total(quant="none", dtype="bfloat16"), total(quant="nf4", dtype="bfloat16")
    assert nf4["weights"] < full["weights"]
    one, four = total(batch_size=1), total(batch_size=4)
    assert four["activations"] == pytest.approx(4 * one["activations"], rel=0.01)
    assert four["logits"] == 4 * one["logits"]
    saved = total(gradient_checkpointing=True)["activations"]
    assert saved < total(gradient_checkpointing=False)["activations"]
    assert total(optimizer="adamw_8bit")["optimiser"] * 4 == total(optimizer="adamw")["optimiser"]
    verdict, advice = _verdict(
        four["total"],
        four["total"] // 2,
        {
            **values,
            "batch_size": 4,
            "device": "cuda",
            "quant": "none",
            "gradient_checkpointing": False,
        },
    )
    assert verdict == "does_not_fit"
    assert advice[:3] == [
        "Use batch size 1 (accumulation keeps the effective batch).",
        "Turn gradient checkpointing on.",
        "Use QLoRA (a 4-bit NF4 base).",
    ]
    assert _verdict(100, 1000, values) == ("fits", [])


def test_a_search_models_plan_counts_the_pictures_patches_too(
    tiny_model: Callable[[str], Path],
) -> None:
    """Contrastive LoRA trains both towers: the image tower's activations are part of the plan,
    and a caption is as long as the text encoder reads."""
    from engine.finetune.plan import estimate_memory

    def activations(image_size_factor: int) -> pf.MemoryItem:
        facts = recipes.model_facts(str(tiny_model("clip")))
        facts.config.vision_config.image_size *= image_size_factor
        _, values = recipes.choose(facts, pf.FinetuneSettings(device="cpu"), 40, 0, 64)
        items, _ = estimate_memory(facts, values, 10_000, facts.max_positions, 0)
        return next(item for item in items if item.name == "activations")

    vision = recipes.model_facts(str(tiny_model("clip"))).config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2 + 1
    one, two = activations(1), activations(2)
    assert f"caption tokens and {patches} image patches" in one.note
    assert two.bytes > one.bytes  # larger pictures, more patches, more memory


def test_a_run_of_one_epoch_step_says_so_in_the_singular(tiny_model: Callable[[str], Path]) -> None:
    facts = recipes.model_facts(str(tiny_model("clip")))
    resolver, values = recipes.choose(facts, pf.FinetuneSettings(epochs=1), 6, 0, 10)
    assert values["steps_per_epoch"] == 1
    assert resolver.choices["total_steps"].reason == "1 epoch x 1 step"
