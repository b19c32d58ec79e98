"""Model choice: the HF cache scan, added folders, the picker, and what is remembered."""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop.state import ModelCatalog, ModelChoice
from desktop.state.model_catalog import scan_hf_cache
from desktop.views.model_picker import ModelPicker


def fake_hub_repo(cache: Path, repo_type: str, repo_id: str, files: list[str]) -> None:
    """The layout huggingface_hub writes: <type>s--org--name/{refs,blobs,snapshots/<rev>}."""
    revision = "0" * 40
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "blobs").mkdir()
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name in files:
        (snapshot / name).write_text("{}")


def model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_the_hf_cache_scan_offers_model_repos_that_have_a_config(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    fake_hub_repo(cache, "model", "llava-hf/llava-1.5-7b-hf", ["config.json", "model.safetensors"])
    fake_hub_repo(cache, "model", "someone/tokenizer-only", ["tokenizer.json"])
    fake_hub_repo(cache, "dataset", "someone/images", ["config.json"])
    entries = scan_hf_cache(cache)
    assert [(e.model, e.source) for e in entries] == [("llava-hf/llava-1.5-7b-hf", "hf-cache")]


def test_a_missing_hf_cache_offers_nothing(tmp_path: Path) -> None:
    assert scan_hf_cache(tmp_path / "nowhere") == []


def test_refresh_scans_in_the_background_and_the_picker_lists_the_result(
    qtbot, settings, tmp_path: Path
) -> None:
    cache = tmp_path / "hub"
    fake_hub_repo(cache, "model", "Qwen/Qwen2-VL-2B-Instruct", ["config.json"])
    catalog = ModelCatalog(settings, hf_cache_dir=cache)
    folder = catalog.add_folder(model_folder(tmp_path / "my-model"))
    with qtbot.waitSignal(catalog.entries_changed, timeout=10_000):
        catalog.refresh()
    picker = ModelPicker()
    qtbot.addWidget(picker)
    picker.set_entries(catalog.entries())
    labels = [picker.model_combo.itemText(i) for i in range(picker.model_combo.count())]
    assert labels == [
        "Choose a model…",
        "my-model",
        "Qwen/Qwen2-VL-2B-Instruct",
        "",
        "Add model folder…",
    ]
    assert folder.model == str(tmp_path / "my-model")


def test_a_folder_without_config_is_refused_with_a_sentence(settings, tmp_path: Path) -> None:
    catalog = ModelCatalog(settings)
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        catalog.add_folder(tmp_path / "photos")
    assert catalog.entries() == []


def test_picking_a_model_emits_the_choice_and_it_is_remembered(
    qtbot, settings, tmp_path: Path
) -> None:
    catalog = ModelCatalog(settings)
    entry = catalog.add_folder(model_folder(tmp_path / "tiny-llava"))
    picker = ModelPicker()
    qtbot.addWidget(picker)
    picker.set_entries(catalog.entries())
    choices: list[ModelChoice] = []
    picker.choice_changed.connect(choices.append)
    picker.choice_changed.connect(catalog.save_choice)
    picker.model_combo.activated.emit(picker.model_combo.findData(entry.model))
    picker.quant_combo.setCurrentIndex(picker.quant_combo.findData("int8"))
    assert choices[-1] == ModelChoice(entry.model, "int8", "auto")
    assert ModelCatalog(settings).last_choice() == ModelChoice(entry.model, "int8", "auto")


def test_add_model_folder_item_asks_for_a_folder_and_keeps_the_current_model(qtbot) -> None:
    picker = ModelPicker()
    qtbot.addWidget(picker)
    picker.set_choice(ModelChoice("org/current"))
    asked: list[bool] = []
    picker.add_folder_requested.connect(lambda: asked.append(True))
    picker.model_combo.activated.emit(picker.model_combo.findText("Add model folder…"))
    assert asked == [True]
    assert picker.choice().model == "org/current"
    assert picker.model_combo.currentText() == "org/current"


def test_a_model_deleted_in_the_models_view_leaves_the_picker_and_the_choice(
    qtbot, make_window, tmp_path: Path
) -> None:
    window = make_window(start=False)
    kept = window.catalog.add_folder(model_folder(tmp_path / "kept"))
    gone = window.catalog.add_folder(model_folder(tmp_path / "gone"))
    window.set_model_choice(ModelChoice(gone.model, "nf4", "cpu"))
    combo = window.model_picker.model_combo
    assert combo.findData(gone.model) >= 0

    # What the engine's answer to DeleteModel sets off (the files are gone by then).
    (tmp_path / "gone" / "config.json").unlink()
    (tmp_path / "gone").rmdir()
    window.models_view.jobs.delete_finished.emit(gone.model, "")
    assert combo.findData(gone.model) < 0 and combo.findData(kept.model) >= 0
    assert window.model_picker.choice() == ModelChoice(None, "nf4", "cpu")
    assert window.session.model_choice.model is None
    assert window.catalog.last_choice().model is None
    assert "gone was deleted" in window.chat_view.notice.label.text()


def test_an_adapter_whose_base_model_is_gone_does_not_switch_chat_to_it(
    qtbot, make_window, tmp_path: Path
) -> None:
    window = make_window(start=False)
    before = window.model_picker.choice()
    gone = str(tmp_path / "models" / "trainbase")
    window.finetune_page.session.use_adapter_requested.emit(gone, str(tmp_path / "run" / "adapter"))
    assert window.model_picker.choice() == before and window.session.adapter is None
    assert "trainbase is gone" in window.finetune_page.session.message
