"""``visiondesk models plan|load|download|list|delete|import|catalogue`` from a terminal."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench.memory_plan_gpu import write_shaped
from tests.engine.hub_server import HubServer, Repo


@pytest.fixture(scope="module")
def llava_7b_config(tmp_path_factory, tiny_model) -> Path:
    """LLaVA-1.5-7B's config and processor files, no weights."""
    return write_shaped("llava-1.5-7b", tmp_path_factory.mktemp("shaped") / "llava", tiny_model)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("visiondesk:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_plan_prints_a_table_with_the_image_tokens_and_a_verdict(run_cli, llava_7b_config) -> None:
    result = run_cli(
        "models", "plan", str(llava_7b_config), "--image-size", "336x336", "--vram", "24"
    )
    assert result.returncode == 0, result.stderr
    rows = dict(line.split("  ", 1) for line in result.stdout.splitlines() if "  " in line)
    rows = {key.strip(): value.strip() for key, value in rows.items()}
    assert rows["image tokens per image"] == "576 at 336x336"
    assert rows["parameters"] == "7.06 B"
    assert rows["quantisation"].startswith("nf4 on cuda")
    assert rows["verdict"] == "fits"
    assert "24.00 GiB" in rows["device memory"]


def test_plan_json_is_machine_readable_and_advises_when_it_does_not_fit(
    run_cli, llava_7b_config
) -> None:
    result = run_cli(
        "models", "plan", str(llava_7b_config), "--quant", "none", "--vram", "8", "--json",
        "--images", "2", "--context", "2048",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["params_total"] == 7_063_427_072 and plan["images"] == 2
    assert plan["verdict"] == "does_not_fit" and plan["total_bytes"] > 8 * 1024**3
    assert any(line.startswith("Quantise to nf4") for line in plan["advice"])
    assert plan["kv_cache_bytes"] == 32 * 32 * 128 * 2 * 2 * plan["sequence_tokens"]


def test_plan_rejects_a_malformed_image_size_with_exit_2(run_cli, llava_7b_config) -> None:
    result = run_cli("models", "plan", str(llava_7b_config), "--image-size", "big")
    assert result.returncode == 2 and "--image-size" in one_error_line(result.stderr)


def test_plan_rejects_a_huge_image_size_and_a_vram_not_above_0_with_exit_2(
    run_cli, llava_7b_config
) -> None:
    huge = run_cli("models", "plan", str(llava_7b_config), "--image-size", "100000x100000")
    assert huge.returncode == 2 and "over 120 megapixels" in one_error_line(huge.stderr)
    for vram in ("-5", "0"):
        result = run_cli("models", "plan", str(llava_7b_config), "--vram", vram)
        assert result.returncode == 2 and "--vram" in one_error_line(result.stderr)


def test_plan_refuses_a_remote_code_config_with_exit_4(run_cli, llava_7b_config, tmp_path) -> None:
    folder = tmp_path / "remote"
    shutil.copytree(llava_7b_config, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageTextToText": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    result = run_cli("models", "plan", str(folder))
    assert result.returncode == 4
    assert "trust_remote_code" in one_error_line(result.stderr)


def test_import_refuses_a_path_as_name_and_a_model_the_app_cannot_use(
    run_cli, tiny_model, tmp_path
) -> None:
    escape = run_cli("models", "import", str(tiny_model("llava")), "--name", "../escape")
    assert escape.returncode == 2 and "is not a folder name" in one_error_line(escape.stderr)
    bert = tmp_path / "bertish"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bert / "model.safetensors").write_bytes(b"x")
    refused = run_cli("models", "import", str(bert))
    assert refused.returncode == 4 and "'bert' model" in one_error_line(refused.stderr)
    assert not (tmp_path / "data" / "escape").exists()
    assert not (tmp_path / "data" / "models" / "bertish").exists()


def test_load_reports_what_was_loaded(run_cli, tiny_model) -> None:
    result = run_cli(
        "models", "load", str(tiny_model("llava")), "--quant", "nf4", "--device", "cpu"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("loaded ") and "nf4 on cpu" in result.stdout


def pickle_only_copy(source: Path, folder: Path) -> Path:
    """The same tiny model with its weights saved as a real pickle checkpoint."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(source, folder)
    for weights in folder.glob("*.safetensors"):
        torch.save(load_file(weights), folder / "pytorch_model.bin")
        weights.unlink()
    return folder


def test_load_refuses_a_pickle_only_model_with_exit_4_unless_allowed(
    run_cli, tiny_model, tmp_path
) -> None:
    folder = pickle_only_copy(tiny_model("llava"), tmp_path / "pickled")
    refused = run_cli("models", "load", str(folder), "--device", "cpu")
    assert refused.returncode == 4
    line = one_error_line(refused.stderr)
    assert "pickle" in line and "pytorch_model.bin" in line
    allowed = run_cli("models", "load", str(folder), "--device", "cpu", "--allow-pickle")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("loaded ")


def test_load_refuses_a_remote_code_model_with_exit_4(run_cli, tiny_model, tmp_path) -> None:
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model("llava"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageTextToText": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    result = run_cli("models", "load", str(folder), "--device", "cpu")
    assert result.returncode == 4 and "trust_remote_code" in one_error_line(result.stderr)


def test_download_list_and_delete_through_a_local_hub(run_cli, tiny_model, tmp_path) -> None:
    cache = tmp_path / "hub"
    repo = Repo.from_folder(tiny_model("llava"))
    with HubServer({"org/tiny-llava": repo}) as hub:
        result = run_cli(
            "models", "download", "org/tiny-llava", "--cache-dir", str(cache),
            "--endpoint", hub.endpoint,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    snapshot = Path(result.stdout.strip())
    assert snapshot.is_dir() and (snapshot / "config.json").is_file()
    assert f"{len(repo.files)} files" in result.stderr

    listed = run_cli("models", "list", "--cache-dir", str(cache), "--json")
    assert listed.returncode == 0, listed.stderr
    entries = {entry["model"]: entry for entry in json.loads(listed.stdout)}
    assert entries["org/tiny-llava"]["complete"] and entries["org/tiny-llava"]["kind"] == "vlm"

    deleted = run_cli("models", "delete", "org/tiny-llava", "--yes", "--cache-dir", str(cache))
    assert deleted.returncode == 0, deleted.stderr
    again = run_cli("models", "list", "--cache-dir", str(cache), "--json")
    assert "org/tiny-llava" not in {entry["model"] for entry in json.loads(again.stdout)}


def test_download_json_streams_progress_events(run_cli, tiny_model, tmp_path) -> None:
    repo = Repo.from_folder(tiny_model("qwen2_vl"))
    with HubServer({"org/tiny-qwen": repo}) as hub:
        result = run_cli(
            "models", "download", "org/tiny-qwen", "--cache-dir", str(tmp_path),
            "--endpoint", hub.endpoint, "--json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and progress[-1]["current"] == progress[-1]["total"] > 0
    assert events[-1]["type"] == "finished" and events[-1]["reason"] == "done"


@pytest.mark.skipif("HF_TOKEN" in os.environ, reason="a token is set in this environment")
def test_downloading_a_gated_repo_without_a_token_exits_4(run_cli, tiny_model, tmp_path) -> None:
    repo = Repo(files=Repo.from_folder(tiny_model("llava")).files, token="hf_needed")
    with HubServer({"org/gated": repo}) as hub:
        result = run_cli(
            "models", "download", "org/gated", "--cache-dir", str(tmp_path),
            "--endpoint", hub.endpoint,
        )  # fmt: skip
    assert result.returncode == 4
    line = one_error_line(result.stderr)
    assert "gated" in line and "token" in line
    assert not list(tmp_path.rglob("*.safetensors"))


def test_import_copies_into_the_data_folder_and_only_imported_folders_can_be_deleted(
    run_cli, tiny_model, tmp_path
) -> None:
    result = run_cli("models", "import", str(tiny_model("qwen2_vl")), "--name", "my-qwen")
    assert result.returncode == 0, result.stderr
    imported = Path(result.stdout.strip())
    assert imported == tmp_path / "data" / "models" / "my-qwen"
    assert (imported / "config.json").is_file()
    listed = run_cli("models", "list", "--json", "--cache-dir", str(tmp_path / "empty"))
    assert str(imported) in {entry["model"] for entry in json.loads(listed.stdout)}

    refused = run_cli("models", "delete", str(tiny_model("qwen2_vl")), "--yes")
    assert refused.returncode == 3 and "did not import" in one_error_line(refused.stderr)
    assert (tiny_model("qwen2_vl") / "config.json").is_file()
    deleted = run_cli("models", "delete", str(imported), "--yes")
    assert deleted.returncode == 0 and not imported.exists()


def test_delete_without_yes_and_without_a_terminal_is_a_usage_error(run_cli) -> None:
    result = run_cli("models", "delete", "org/anything")
    assert result.returncode == 2 and "--yes" in one_error_line(result.stderr)


def test_catalogue_lists_picks_with_a_verdict_for_the_given_gpu(run_cli) -> None:
    result = run_cli("models", "catalogue", "--vram", "24")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("24gb:") and "embeddings:" in result.stdout
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in result.stdout and ": fits" in result.stdout


def test_downloading_a_model_visiondesk_cannot_use_exits_4_and_keeps_nothing(
    run_cli, tmp_path
) -> None:
    files = {
        "config.json": json.dumps({"model_type": "gpt2"}).encode(),
        "model.safetensors": b"\0" * 100_000,
    }
    with HubServer({"org/text-only": Repo(files=files)}) as hub:
        result = run_cli(
            "models", "download", "org/text-only", "--cache-dir", str(tmp_path / "hub"),
            "--endpoint", hub.endpoint,
        )  # fmt: skip
        assert hub.gets("model.safetensors") == []
    assert result.returncode == 4, result.stderr
    assert "is a 'gpt2' model, not an image-text-to-text" in one_error_line(result.stderr)
    assert not list((tmp_path / "hub").glob("models--*"))


@pytest.fixture
def revoked_token(monkeypatch) -> None:
    """HF_TOKEN set to a token the Hub no longer accepts (before run_cli copies the env)."""
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")


def test_a_rejected_token_is_one_line_that_names_hf_token(
    revoked_token, run_cli, tiny_model, tmp_path
) -> None:
    repo = Repo(files=Repo.from_folder(tiny_model("llava")).files, token="hf_good")
    with HubServer({"org/gated": repo}, tokens={"hf_good"}) as hub:
        result = run_cli(
            "models", "download", "org/gated", "--cache-dir", str(tmp_path),
            "--endpoint", hub.endpoint,
        )  # fmt: skip
    assert result.returncode == 4, result.stderr
    line = one_error_line(result.stderr)
    assert "token in HF_TOKEN was rejected" in line and "unset it" in line
