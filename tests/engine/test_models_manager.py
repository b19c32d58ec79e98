"""Model-manager jobs through a real engine: list, delete, import, embed (CLIP and SigLIP)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from engine import protocol as p
from engine.errors import BadInput, Unsupported
from engine.models.installed import import_folder
from engine.protocol import models as pm
from tests.engine.harness import EngineHarness, job_id
from tests.engine.hub_server import HubServer, Repo


@pytest.fixture(scope="module")
def engine(tiny_cache, tmp_path_factory) -> Iterator[EngineHarness]:
    home = tmp_path_factory.mktemp("engine-home")  # never the user's Hugging Face cache
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(home / "hf"))
        patch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
        harness = EngineHarness()
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for index, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        path = folder / f"p{index}.png"
        Image.new("RGB", (40 + 10 * index, 32), color).save(path)
        paths.append(str(path))
    return paths


def installed(engine: EngineHarness, **kwargs) -> list[pm.InstalledModel]:
    finished, _ = engine.run(pm.ListInstalled(job_id=job_id(), **kwargs))
    assert finished.reason == "done", finished.message
    assert finished.result is not None
    return [pm.InstalledModel(**entry) for entry in finished.result["models"]]


def download_into(cache: Path, repo_id: str, files: dict[str, bytes], patterns=None) -> None:
    from engine.models.download import download

    with HubServer({repo_id: Repo(files=files)}) as hub:
        request = pm.DownloadModel(
            job_id="x", repo_id=repo_id, cache_dir=str(cache), endpoint=hub.endpoint,
            allow_patterns=patterns, min_free_bytes=0,
        )  # fmt: skip
        download(request, lambda _d: None, lambda: False)


def test_installed_lists_cache_repos_and_folders_and_marks_incomplete_ones(
    engine, tiny_model, tmp_path
) -> None:
    cache = tmp_path / "hub"
    llava = Repo.from_folder(tiny_model("llava")).files
    download_into(cache, "org/tiny-llava", llava)
    download_into(cache, "org/config-only", llava, patterns=["*.json"])
    download_into(cache, "org/tiny-clip", Repo.from_folder(tiny_model("clip")).files)
    text_only = {"config.json": json.dumps({"model_type": "llama"}).encode()}
    download_into(cache, "org/text-only", text_only, patterns=["*"])  # only a file list fetches it
    folder = str(tiny_model("qwen2_vl"))
    entries = {e.model: e for e in installed(engine, folders=[folder], cache_dir=str(cache))}
    assert set(entries) == {folder, "org/tiny-llava", "org/config-only", "org/tiny-clip"}
    assert entries[folder].source == "folder" and entries[folder].is_demo
    assert entries["org/tiny-llava"].complete and entries["org/tiny-llava"].kind == "vlm"
    assert not entries["org/config-only"].complete
    assert entries["org/tiny-clip"].kind == "embedding"
    assert entries["org/tiny-llava"].size_bytes >= sum(len(data) for data in llava.values())


def test_delete_removes_a_cache_repo_and_only_folders_inside_the_managed_root(
    engine, tiny_model, tmp_path
) -> None:
    cache = tmp_path / "hub"
    download_into(cache, "org/tiny-llava", Repo.from_folder(tiny_model("llava")).files)
    finished, _ = engine.run(
        pm.DeleteModel(job_id=job_id(), model="org/tiny-llava", cache_dir=str(cache))
    )
    assert finished.reason == "done" and finished.result["freed_bytes"] > 0
    assert installed(engine, cache_dir=str(cache)) == []

    outside = tmp_path / "mine"
    shutil.copytree(tiny_model("llava"), outside)
    managed = tmp_path / "managed"
    finished, _ = engine.run(
        pm.DeleteModel(job_id=job_id(), model=str(outside), managed_root=str(managed))
    )
    assert finished.error_code == p.ErrorCode.BAD_INPUT and "did not import" in finished.message
    assert (outside / "config.json").is_file()

    inside = managed / "copy"
    shutil.copytree(tiny_model("llava"), inside)
    finished, _ = engine.run(
        pm.DeleteModel(job_id=job_id(), model=str(inside), managed_root=str(managed))
    )
    assert finished.reason == "done" and not inside.exists() and managed.is_dir()


def test_import_copies_a_model_folder_with_progress_and_refuses_a_non_model(
    engine, tiny_model, tmp_path
) -> None:
    managed = tmp_path / "models"
    command = pm.ImportFolder(
        job_id=job_id(), source=str(tiny_model("llava")), destination_root=str(managed),
        name="my-llava",
    )  # fmt: skip
    engine.send(command)
    events = list(engine.job_events(command.job_id, timeout=60))
    finished = events[-1]
    assert isinstance(finished, p.Finished) and finished.reason == "done", finished
    assert any(isinstance(e, p.Progress) and e.stage == "import" for e in events)
    target = managed / "my-llava"
    assert finished.result["path"] == str(target)
    for source in tiny_model("llava").iterdir():
        if source.is_file():
            assert (target / source.name).read_bytes() == source.read_bytes()
    assert [f.name for f in managed.iterdir()] == ["my-llava"]

    again, _ = engine.run(
        pm.ImportFolder(job_id=job_id(), source=str(target), destination_root=str(managed),
                        name="my-llava")
    )  # fmt: skip
    assert again.error_code == p.ErrorCode.BAD_INPUT and "already exists" in again.message
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    refused, _ = engine.run(
        pm.ImportFolder(job_id=job_id(), source=str(empty), destination_root=str(managed))
    )
    assert refused.error_code == p.ErrorCode.MODEL_NOT_FOUND and "config.json" in refused.message


def test_a_cancelled_import_leaves_nothing_behind(tiny_model, tmp_path) -> None:
    source = tmp_path / "source"
    shutil.copytree(tiny_model("llava"), source)
    with open(source / "big.safetensors", "wb") as big:
        big.truncate(64 * 1024 * 1024)
    calls: list[int] = []
    result = import_folder(
        str(source), str(tmp_path / "models"), None,
        lambda done, total, name: calls.append(done), lambda: len(calls) >= 2,
    )  # fmt: skip
    assert result is None and len(calls) == 2
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.parametrize("name", ["../escape", "{tmp}/absolute", "sub/dir", ".."])
def test_import_refuses_a_name_that_would_leave_the_models_folder(
    tiny_model, tmp_path, name
) -> None:
    managed = tmp_path / "data" / "models"
    name = name.format(tmp=tmp_path)
    with pytest.raises(BadInput, match="not a folder name"):
        import_folder(str(tiny_model("llava")), str(managed), name, lambda *_: None, lambda: False)
    assert not managed.exists() and not (tmp_path / "data" / "escape").exists()
    assert not (tmp_path / "absolute").exists()


def test_import_refuses_a_model_the_app_cannot_use(tmp_path) -> None:
    """A text-only model would be copied and then never listed, so it is refused up front."""
    bert = tmp_path / "bertish"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bert / "model.safetensors").write_bytes(b"x")
    managed = tmp_path / "models"
    with pytest.raises(Unsupported, match="is a 'bert' model, not an image-text-to-text or CLIP"):
        import_folder(str(bert), str(managed), None, lambda *_: None, lambda: False)
    assert not managed.exists()


def direct_embeddings(folder: Path, images: list[str], texts: list[str], padding) -> tuple:
    import torch
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    with torch.inference_mode():
        pixel = processor(images=[Image.open(path).convert("RGB") for path in images],
                          return_tensors="pt")["pixel_values"]  # fmt: skip
        image = model.get_image_features(pixel_values=pixel)
        tokens = processor(text=texts, padding=padding, truncation=True, return_tensors="pt")
        text = model.get_text_features(**tokens)
    image = getattr(image, "pooler_output", image)
    text = getattr(text, "pooler_output", text)
    return (
        torch.nn.functional.normalize(image, dim=-1),
        torch.nn.functional.normalize(text, dim=-1),
    )


@pytest.mark.parametrize(("family", "padding"), [("clip", "longest"), ("siglip", "max_length")])
def test_embeddings_through_the_engine_equal_direct_feature_calls(
    engine, tiny_model, pictures, family, padding
) -> None:
    import torch

    texts = ["a red square", "a photo of a dog on the beach"]
    finished, _ = engine.run(
        pm.Embed(job_id=job_id(), model=str(tiny_model(family)), images=pictures, texts=texts,
                 device="cpu")
    )  # fmt: skip
    assert finished.reason == "done", finished.message
    result = finished.result
    image_direct, text_direct = direct_embeddings(tiny_model(family), pictures, texts, padding)
    engine_images = torch.tensor(result["image_embeddings"])
    engine_texts = torch.tensor(result["text_embeddings"])
    assert engine_images.shape == image_direct.shape == (3, result["dimension"])
    assert engine_texts.shape == text_direct.shape
    torch.testing.assert_close(engine_images, image_direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(engine_texts, text_direct, atol=1e-5, rtol=1e-5)
    assert torch.allclose(engine_images.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_embed_refuses_a_generation_model_and_a_bad_image(engine, tiny_model, tmp_path) -> None:
    finished, _ = engine.run(
        pm.Embed(job_id=job_id(), model=str(tiny_model("llava")), texts=["x"], device="cpu")
    )
    assert finished.error_code == p.ErrorCode.UNSUPPORTED and "CLIP" in finished.message
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    finished, _ = engine.run(
        pm.Embed(job_id=job_id(), model=str(tiny_model("clip")), images=[str(broken)])
    )
    assert finished.error_code == p.ErrorCode.BAD_INPUT and "broken.png" in finished.message


def test_plan_memory_is_an_engine_job(engine, tiny_model) -> None:
    finished, _ = engine.run(
        pm.PlanMemory(job_id=job_id(), model=str(tiny_model("llava")), device="cpu",
                      image_width=64, image_height=48)
    )  # fmt: skip
    assert finished.reason == "done", finished.message
    plan = pm.MemoryPlan(**finished.result["plan"])
    assert plan.verdict == "fits" and plan.image_tokens_per_image > 0 and plan.device == "cpu"


def test_a_model_a_run_is_training_on_is_not_deleted(tiny_model, tmp_path, monkeypatch) -> None:
    """Deleting it would pull the weights from under the trainer (and every later evaluation)."""
    from engine.capabilities.models_manager import run_delete
    from engine.finetune import trainer_process
    from engine.finetune.plan import build_plan
    from engine.finetune.runs import create_run, write_status
    from engine.protocol import finetune as pf
    from engine.runtime import Runtime
    from tests.engine.test_finetune_data import make_colour_dataset

    managed = tmp_path / "models"
    base = managed / "base"
    shutil.copytree(tiny_model("llava"), base)
    data = make_colour_dataset(tmp_path / "data", 4)
    settings = pf.FinetuneSettings(max_steps=2)
    run = tmp_path / "run"
    create_run(build_plan(str(base), str(data), settings), str(run), str(base), settings)
    command = pm.DeleteModel(
        job_id=job_id(), model=str(base), managed_root=str(managed), runs_dir=str(tmp_path)
    )
    monkeypatch.setitem(trainer_process._active, str(run.resolve()), None)  # training here
    with pytest.raises(BadInput, match="is being trained on"):
        run_delete(None, command, Runtime())  # type: ignore[arg-type]
    monkeypatch.delitem(trainer_process._active, str(run.resolve()))

    write_status(run, "running")  # a trainer of another process (the app's, seen by the CLI)
    with pytest.raises(BadInput, match="is being trained on"):
        run_delete(None, command, Runtime())  # type: ignore[arg-type]
    assert (base / "config.json").is_file()

    write_status(run, "paused")  # the run has stopped
    run_delete(None, command, Runtime())  # type: ignore[arg-type]
    assert not base.exists()


def test_a_base_model_that_is_gone_is_named_as_such(tmp_path) -> None:
    """Not transformers' "Repo id must be in the form …" for a deleted folder."""
    from engine.errors import ModelNotFound
    from engine.finetune.adapters import load_base

    gone = tmp_path / "models" / "trainbase"
    with pytest.raises(ModelNotFound, match="trainbase is gone"):
        load_base(str(gone), kind="generative", quant="none", device="cpu", dtype="float32",
                  skip_modules=[])  # fmt: skip
