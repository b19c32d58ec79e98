"""The model catalogue in resources/: well-formed, loadable families, picks for every GPU size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.models.catalogue import (
    CATALOGUE_PATH,
    PICK_GROUPS,
    CatalogueError,
    load_catalogue,
    problems,
)
from engine.protocol.models import GIB


def test_the_shipped_catalogue_has_no_problems() -> None:
    catalogue = load_catalogue()
    assert problems(catalogue) == []
    assert len(catalogue.models) >= 10


def test_every_group_has_picks_and_embeddings_are_embedding_models() -> None:
    catalogue = load_catalogue()
    for group in PICK_GROUPS:
        assert catalogue.picks[group]
    kinds = {catalogue.entry(repo_id).kind for repo_id in catalogue.picks["embeddings"]}
    assert kinds == {"embedding"}
    assert {"vlm"} == {catalogue.entry(r).kind for r in catalogue.picks["6gb"]}


def test_the_picks_for_a_gpu_size_fit_that_gpu_in_4_bit() -> None:
    catalogue = load_catalogue()
    for group, vram_gb in (("6gb", 6), ("8-12gb", 12), ("24gb", 24)):
        for repo_id in catalogue.picks[group]:
            entry = catalogue.entry(repo_id)
            assert entry.fit("nf4", int(vram_gb * GIB)) in ("fits", "tight"), (group, repo_id)
    for repo_id in catalogue.picks["cpu"]:
        assert catalogue.entry(repo_id).cpu_ram_gb <= 8


def test_gated_models_say_so() -> None:
    catalogue = load_catalogue()
    gated = {entry.repo_id for entry in catalogue.models if entry.gated}
    assert {"meta-llama/Llama-3.2-11B-Vision-Instruct", "google/paligemma2-3b-mix-448"} <= gated


def test_a_malformed_catalogue_is_reported_with_the_field(tmp_path: Path) -> None:
    data = json.loads(CATALOGUE_PATH.read_text())
    data["models"][0]["params_b"] = "seven"
    broken = tmp_path / "catalogue.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(CatalogueError, match="params_b"):
        load_catalogue(broken)
    broken.write_text("{not json")
    with pytest.raises(CatalogueError, match="not valid JSON"):
        load_catalogue(broken)


def test_problems_names_an_unknown_family_and_a_dangling_pick(tmp_path: Path) -> None:
    data = json.loads(CATALOGUE_PATH.read_text())
    data["models"][0]["family"] = "no_such_family"
    data["picks"]["cpu"].append("nobody/nothing")
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(data))
    found = problems(load_catalogue(path))
    assert any("no_such_family" in line for line in found)
    assert any("nobody/nothing" in line for line in found)
