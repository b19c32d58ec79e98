"""``visiondesk finetune``: plan, train, Ctrl-C stops and saves, ``--resume`` finishes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine.test_finetune_data import make_colour_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_dataset(tmp_path_factory.mktemp("colours") / "data", 8)


def test_plan_shows_each_setting_with_its_reason(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tiny_model: Callable[[str], Path],
    data: Path,
) -> None:
    result = run_cli(
        "finetune",
        "--model",
        str(tiny_model("llava")),
        "--data",
        str(data),
        "--plan",
        "--rank",
        "8",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Teaches the model your answers" in out and "8 training rows, 0 held out" in out
    assert "rank                     8          set by you" in out
    assert "full precision: 4-bit saves GPU memory, and there is no GPU" in out
    assert "memory:" in out and "activations" in out
    assert "too few to hold any out" in out


def test_training_writes_an_adapter_and_a_finished_run_cannot_be_resumed(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tiny_model: Callable[[str], Path],
    data: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "finetune",
        "--model",
        str(tiny_model("llava")),
        "--data",
        str(data),
        "--out",
        str(out),
        "--max-steps",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert f"adapter saved to {out / 'adapter'} (step 3" in result.stdout
    assert "step 3/3" in result.stderr and "eval loss" in result.stderr
    assert result.stderr.count("8-bit AdamW needs CUDA") == 1  # the CPU's notice, said once
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    again = run_cli("finetune", "--resume", str(out))
    assert again.returncode == 3 and "nothing to resume" in again.stderr
    busy = run_cli(
        "finetune", "--model", str(tiny_model("llava")), "--data", str(data), "--out", str(out)
    )
    assert busy.returncode == 3 and "is not empty" in busy.stderr


def test_bad_input_and_model_problems_have_their_exit_codes(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tiny_model: Callable[[str], Path],
    tmp_path: Path,
    data: Path,
) -> None:
    missing = run_cli(
        "finetune", "--model", str(tiny_model("llava")), "--data", str(tmp_path / "nope"), "--plan"
    )
    assert missing.returncode == 3 and "Dataset folder not found" in missing.stderr
    no_model = run_cli(
        "finetune", "--model", str(tmp_path / "no-model"), "--data", str(data), "--plan"
    )
    assert no_model.returncode == 4 and "not found" in no_model.stderr
    usage = run_cli("finetune", "--data", str(data))
    assert usage.returncode == 2 and "--model and --data are required" in usage.stderr


def test_ctrl_c_stops_and_saves_and_resume_finishes_the_run(
    tiny_model: Callable[[str], Path], data: Path, tmp_path: Path, tiny_cache: Path
) -> None:
    out = tmp_path / "run"
    env = dict(os.environ, VISIONDESK_DATA_DIR=str(tmp_path / "home"))
    command = [
        sys.executable,
        "-m",
        "desktop.main",
        "finetune",
        "--model",
        str(tiny_model("llava")),
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "20",
        "--json",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 240
    for line in process.stdout:
        event = json.loads(line)
        if event["type"] == "progress" and event["stage"] == "training" and event["current"] >= 3:
            process.send_signal(signal.SIGINT)  # what Ctrl-C does
            break
        assert time.monotonic() < deadline
    rest, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr
    finished = [json.loads(line) for line in rest.splitlines() if '"finished"' in line][-1]
    assert finished["reason"] == "cancelled" and finished["result"]["run"]["resumable"]
    stopped_at = finished["result"]["run"]["step"]
    assert 3 <= stopped_at < 80
    assert (out / "adapter" / "adapter_config.json").is_file()
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "desktop.main",
            "finetune",
            "--resume",
            str(out),
            "--max-steps",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        input="",
    )
    # --max-steps belongs to a new run; a resume continues the run exactly as it was planned
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {stopped_at} (step-{stopped_at:08d})" in resumed.stderr
    assert resumed.stderr.count(f"step-{stopped_at:08d}") == 1
    assert "(step 80" in resumed.stdout


def test_ctrl_c_from_a_terminal_says_how_to_resume_and_exits_130(
    tiny_model: Callable[[str], Path], data: Path, tmp_path: Path, tiny_cache: Path
) -> None:
    """A terminal's Ctrl-C goes to the command's whole process group, which the engine (in a
    session of its own) is not in: the command stops the job, the trainer saves, and the CLI
    names the run to resume and exits 130."""
    out = tmp_path / "run"
    env = dict(os.environ, VISIONDESK_DATA_DIR=str(tmp_path / "home"))
    command = [sys.executable, "-m", "desktop.main", "finetune", "--model"]
    command += [str(tiny_model("llava")), "--data", str(data), "--out", str(out), "--epochs", "50"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a process group of its own, as a terminal's job has
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 240
    for line in process.stderr:
        if line.startswith("visiondesk: step "):  # training has begun
            os.killpg(process.pid, signal.SIGINT)
            break
        assert time.monotonic() < deadline
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr
    assert f"continue with: visiondesk finetune --resume {out}" in stderr.lower()
    # The trainer (which ignores Ctrl-C) may still be saving when the CLI has exited.
    deadline = time.monotonic() + 60
    while json.loads((out / "status.json").read_text())["state"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_the_data_problems_are_listed_before_the_plan_or_its_error(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tiny_model: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    from PIL import Image

    images_only = tmp_path / "images_only"
    images_only.mkdir()
    for index in range(2):
        Image.new("RGB", (48, 40), (200, 30 * index, 0)).save(images_only / f"p{index}.png")
    model = str(tiny_model("llava"))
    nothing = run_cli("finetune", "--model", model, "--data", str(images_only), "--plan")
    assert nothing.returncode == 3
    listed = nothing.stderr.index("p0.png has no caption file (p0.txt) (left out)")
    assert "p1.png has no caption file (p1.txt)" in nothing.stderr
    assert nothing.stderr.index("No training rows are left") > listed

    mixed = make_colour_dataset(tmp_path / "mixed", 2)
    (mixed / "metadata.jsonl").write_text(
        '{"image": "red.png", "caption": "A plain red square."}\n{not json\n{"image": "red.png"}\n'
    )
    plan = run_cli("finetune", "--model", model, "--data", str(mixed), "--plan")
    assert plan.returncode == 0, plan.stderr
    assert "1 training rows" in plan.stdout
    assert "2 problems in the data" in plan.stderr
    assert (
        "metadata.jsonl line 2: " in plan.stderr and "metadata.jsonl line 3: no text" in plan.stderr
    )
