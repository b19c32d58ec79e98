"""``visiondesk chat`` and ``models make-demo`` from a terminal: output and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "any.png"
    Image.new("RGB", (64, 48), (30, 90, 200)).save(path)
    return path


def test_version(run_cli) -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip().startswith("visiondesk ")


def test_make_demo_then_chat_prints_generated_text(run_cli, tmp_path, picture) -> None:
    demo = tmp_path / "DEMO"
    made = run_cli("models", "make-demo", str(demo))
    assert made.returncode == 0, made.stderr
    assert (demo / "config.json").is_file() and any(demo.glob("*.safetensors"))
    assert "random" in made.stderr.lower()
    chat = run_cli(
        "chat",
        "--model",
        str(demo),
        "--quant",
        "nf4",
        "--device",
        "cpu",
        "--image",
        str(picture),
        "--max-new-tokens",
        "8",
        "hi",
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip(), "no generated text"


def test_make_demo_names_the_families_it_knows_in_its_own_words(run_cli, tmp_path) -> None:
    made = run_cli("models", "make-demo", "--family", "nope", str(tmp_path / "x"))
    assert made.returncode == 2
    assert "visiondesk models make-demo: error: argument --family" in made.stderr
    assert "qwen2_vl" in made.stderr and "engine.testing" not in made.stderr
    assert not (tmp_path / "x").exists()


def test_a_conversation_in_the_terminal_keeps_its_history_and_its_cache(
    run_cli, tiny_model, picture
) -> None:
    typed = f"/image {picture}\nWhat is it?\nAnd its colour?\n/image /no/such.png\n/new\nHi\n"
    result = run_cli(
        "chat", "--model", str(tiny_model("llava")), "--quant", "nf4", "--device", "cpu",
        "--max-new-tokens", "6", "--json", stdin=typed,
    )  # fmt: skip
    events = [json.loads(line) for line in result.stdout.splitlines()]
    ends = [e for e in events if e["type"] == "finished"]
    assert len(ends) == 3 and all(e["reason"] in ("done", "length") for e in ends)
    first, follow_up, fresh = (e["result"] for e in ends)
    # The follow-up is asked with the whole conversation, whose start the engine has cached.
    assert follow_up["prompt_tokens"] > first["prompt_tokens"] + 3
    assert follow_up["cached_tokens"] > 0 and first["cached_tokens"] == 0
    assert fresh["prompt_tokens"] < first["prompt_tokens"]  # /new: no picture, no history
    assert "any.png goes with the next question" in result.stderr
    assert "image not found: /no/such.png" in result.stderr
    assert result.returncode == 3  # the missing picture is remembered in the exit code


def test_in_a_conversation_a_picture_that_cannot_be_read_fails_only_its_own_question(
    run_cli, tiny_model, tmp_path, picture
) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(picture.read_bytes()[:60])
    typed = f"/image {corrupt}\nWhat is it?\nSay hello.\n/image\n"
    result = run_cli(
        "chat", "--model", str(tiny_model("llava")), "--quant", "nf4", "--device", "cpu",
        "--max-new-tokens", "4", "--json", stdin=typed,
    )  # fmt: skip
    ends = [e for e in map(json.loads, result.stdout.splitlines()) if e["type"] == "finished"]
    assert [e["reason"] for e in ends][0] == "error" and ends[1]["reason"] in ("done", "length")
    assert "the question's pictures were dropped" in result.stderr
    assert "/image PATH attaches the picture at PATH" in result.stderr  # not "not found: <cwd>"
    assert result.returncode == 3  # the failure is remembered in the exit code


def test_json_mode_prints_one_event_per_line(run_cli, tiny_model, picture) -> None:
    result = run_cli(
        "chat",
        "--model",
        str(tiny_model("qwen2_vl")),
        "--quant",
        "nf4",
        "--device",
        "cpu",
        "--image",
        str(picture),
        "--max-new-tokens",
        "6",
        "--json",
        "describe",
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["type"] == "finished" and events[-1]["reason"] in ("done", "length")
    assert {"job_started", "finished"} <= {event["type"] for event in events}
    streamed = "".join(event["text"] for event in events if event["type"] == "delta")
    assert streamed == events[-1]["result"]["text"]


def test_a_corrupt_image_exits_3_with_one_clear_line(
    run_cli, tiny_model, tmp_path, picture
) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(picture.read_bytes()[:60])
    result = run_cli("chat", "--model", str(tiny_model("llava")), "--image", str(corrupt), "hi")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "corrupt.png" in lines[0] and lines[0].startswith("visiondesk: error:")
    )
    assert result.stdout == ""


def test_a_missing_image_exits_3(run_cli, tiny_model, tmp_path) -> None:
    result = run_cli(
        "chat", "--model", str(tiny_model("llava")), "--image", str(tmp_path / "no.png"), "hi"
    )
    assert result.returncode == 3 and "not found" in result.stderr


def test_a_folder_without_weights_exits_4(run_cli, tiny_model, tmp_path, picture) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(tiny_model("llava") / "config.json", folder)
    result = run_cli("chat", "--model", str(folder), "--image", str(picture), "hi")
    assert result.returncode == 4
    assert len(result.stderr.strip().splitlines()) == 1 and "no weights" in result.stderr


def test_a_pickle_only_model_is_refused_with_exit_4(run_cli, tiny_model, tmp_path, picture) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model("llava"), folder)
    for weights in folder.glob("*.safetensors"):
        weights.rename(weights.with_name("pytorch_model.bin"))
    result = run_cli("chat", "--model", str(folder), "--image", str(picture), "hi")
    assert result.returncode == 4 and "pickle" in result.stderr
    assert "On the command line: --allow-pickle." in result.stderr  # what to do about it


def test_chat_and_extract_load_a_pickle_only_model_with_allow_pickle(
    run_cli, tiny_model, tmp_path, picture
) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "consented"
    shutil.copytree(tiny_model("llava"), folder)
    state = {}
    for weights in folder.glob("*.safetensors"):
        state.update(load_file(weights))
        weights.unlink()
    torch.save(state, folder / "pytorch_model.bin")
    chat = run_cli("chat", "--model", str(folder), "--allow-pickle", "--device", "cpu",
                   "--max-new-tokens", "4", "--image", str(picture), "hi")  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    extract = run_cli("extract", str(picture), "--schema", "key_values", "--model", str(folder),
                      "--allow-pickle", "--one-pass", "--device", "cpu", "--max-new-tokens", "32",
                      "--max-long-side", "128")  # fmt: skip
    assert extract.returncode in (0, 1), extract.stderr  # read (a random model may not be valid)
    assert "pickle weights" not in extract.stderr and ": page 1 " in extract.stderr


def test_a_remote_code_model_is_refused_with_exit_4(run_cli, tiny_model, tmp_path, picture) -> None:
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model("llava"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageTextToText": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    result = run_cli("chat", "--model", str(folder), "--image", str(picture), "hi")
    assert result.returncode == 4 and "trust_remote_code" in result.stderr


def test_an_unknown_model_path_exits_4(run_cli, tmp_path, picture) -> None:
    result = run_cli("chat", "--model", str(tmp_path / "nowhere"), "--image", str(picture), "hi")
    assert result.returncode == 4 and "not found" in result.stderr


def test_usage_errors_exit_2(run_cli) -> None:
    assert run_cli("chat", "hi").returncode == 2  # --model missing
    assert run_cli("chat", "--model", "m", "--quant", "fp3", "hi").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_a_missing_adapter_folder_is_a_clear_error(run_cli, tiny_model, tmp_path, picture) -> None:
    result = run_cli(
        "chat", "--model", str(tiny_model("llava")), "--adapter", str(tmp_path / "no-adapter"),
        "--device", "cpu", "--image", str(picture), "hi",
    )  # fmt: skip
    assert result.returncode == 3 and "Adapter folder not found" in result.stderr
