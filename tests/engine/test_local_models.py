"""Loading local models: from the Hugging Face cache by repo id, each quantisation, and unload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine import protocol as p
from engine.errors import ModelNotFound
from engine.models.resolve import resolve_model
from tests.engine.harness import EngineHarness, job_id


def fake_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """The standard cache layout: models--org--name/{refs/main, snapshots/<rev>/files}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_a_repo_id_resolves_to_its_snapshot_in_the_hf_cache(tmp_path, monkeypatch, tiny_model):
    snapshot = fake_hub_cache(tmp_path / "hub", "acme/tiny-llava", tiny_model("llava"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model("acme/tiny-llava")
    assert resolved.path == snapshot and resolved.model_type == "llava"


def test_a_repo_id_missing_from_the_cache_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="not in the local Hugging Face cache"):
        resolve_model("acme/not-downloaded")


@pytest.fixture(scope="module")
def engine_with_cache(tmp_path_factory, tiny_cache):
    from engine.testing import tiny_model_path

    hub = tmp_path_factory.mktemp("hub")
    fake_hub_cache(hub, "acme/tiny-qwen", tiny_model_path("qwen2_vl"))
    previous = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    os.environ.update(HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1")
    harness = EngineHarness()
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    yield harness
    harness.close()


@pytest.mark.parametrize(
    "quant, dtype", [("nf4", "float32"), ("int8", "float32"), ("none", "float32")]
)
def test_load_by_repo_id_in_each_quantisation_then_unload(engine_with_cache, quant, dtype):
    engine = engine_with_cache
    finished, _ = engine.run(
        p.LoadModel(job_id=job_id(), model="acme/tiny-qwen", quant=quant, device="cpu")
    )
    assert finished.reason == "done", finished.message
    assert finished.result is not None
    info = finished.result["model"]
    assert (info["quant"], info["device"], info["family"], info["dtype"]) == (
        quant,
        "cpu",
        "qwen2_vl",
        dtype,
    )
    assert info["memory_bytes"] > 0
    engine.send(p.GetStatus())
    status = next(e for e in iter(engine.next_event, None) if isinstance(e, p.EngineStatus))
    assert status.loaded is not None and status.loaded.quant == quant

    answer, text = engine.run(
        p.Chat(
            job_id=job_id(),
            messages=[p.ChatMessage(role="user", text="hello")],  # text-only works too
            sampling=p.Sampling(max_new_tokens=4),
        )
    )
    assert answer.reason in ("done", "length") and answer.result and answer.result["quant"] == quant

    unloaded, _ = engine.run(p.Unload(job_id=job_id()))
    assert unloaded.result == {"unloaded": True}
    engine.send(p.GetStatus())
    status = next(e for e in iter(engine.next_event, None) if isinstance(e, p.EngineStatus))
    assert status.loaded is None


def test_nf4_weights_are_smaller_than_full_precision(engine_with_cache):
    sizes = {}
    for quant in ("nf4", "none"):
        finished, _ = engine_with_cache.run(
            p.LoadModel(job_id=job_id(), model="acme/tiny-qwen", quant=quant, device="cpu")
        )
        assert finished.result is not None
        sizes[quant] = finished.result["model"]["memory_bytes"]
    assert sizes["nf4"] < sizes["none"]
