"""The trainer process: it learns, and a killed run resumes to exactly the same adapter.

These run the real trainer process (``python -m engine.finetune.worker``) on a tiny LLaVA with a
generated dataset of eight coloured squares. The resume tests use a 4-bit NF4 base on the CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.finetune import checkpoint as ckpt
from engine.finetune.plan import build_plan
from engine.finetune.runs import create_run, describe
from engine.finetune.trainer_process import run_child
from engine.protocol import finetune as pf
from tests.engine.test_finetune_data import make_colour_dataset, sharp_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sharp_llava(
    tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return sharp_copy(tiny_model("llava"), tmp_path_factory.mktemp("sharp") / "llava")


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_dataset(tmp_path_factory.mktemp("colours") / "data", 8)


def new_run(model: Path, data: Path, out: Path, **settings: Any) -> Path:
    values = pf.FinetuneSettings(**settings)
    create_run(build_plan(str(model), str(data), values), str(out), str(model), values)
    return out


def follow(run: Path, args: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    finished = run_child(run, args or [], events.append, lambda: False)
    return finished, events


def start_and_kill(run: Path, after_step: int) -> list[dict[str, Any]]:
    """Run the trainer and SIGKILL it as soon as it reports ``after_step``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.finetune.worker", str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    events = []
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        events.append(event)
        if event["event"] == "step" and event["step"] == after_step:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return events


def adapter_tensors(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_loss_on_a_memorisable_dataset_falls_well_below_its_start(
    sharp_llava: Path, colours: Path, tmp_path: Path
) -> None:
    run = new_run(sharp_llava, colours, tmp_path / "run", epochs=15, learning_rate=1e-2)
    finished, events = follow(run)
    assert finished["reason"] == "done" and finished["step"] == 60
    evals = [e for e in events if e["event"] == "eval"]
    steps = [e for e in events if e["event"] == "step"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert evals[-1]["eval_loss"] < 0.15 * evals[0]["eval_loss"]
    assert sum(s["loss"] for s in steps[-8:]) / 8 < 0.25 * sum(s["loss"] for s in steps[:4]) / 4
    step = steps[-1]
    assert step["total_steps"] == 60 and step["epoch"] == pytest.approx(15.0)
    assert step["samples_per_s"] > 0 and step["tokens_per_s"] > step["samples_per_s"]
    assert step["peak_memory_bytes"] > 0 and 0.0 <= step["data_wait_fraction"] < 1.0
    assert step["eta_s"] == 0 and steps[5]["eta_s"] > 0
    trial = next(e for e in events if e["event"] == "trial")
    assert trial["ok"] and trial["batch_size"] == 2 and trial["tokens"] > 0
    info = describe(run)
    assert info.state == "done" and info.adapter_dir and not info.resumable
    notes = json.loads((run / "adapter" / "visiondesk_adapter.json").read_text())
    assert notes["recipe"] == "language" and notes["complete"] and notes["step"] == 60
    assert (run / "adapter" / "adapter_config.json").is_file()
    kept = [c.step for c in ckpt.listed(run)]
    assert kept == [54, 60]  # the last two (no held-out rows: no "best" to keep apart)


NF4_RUN = {
    "quant": "nf4",
    "epochs": 3,
    "batch_size": 2,
    "grad_accum": 2,
    "checkpoint_every": 2,
    "learning_rate": 5e-3,
    "trial_step": False,
}


@pytest.fixture(scope="module")
def uninterrupted(
    sharp_llava: Path, colours: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    run = new_run(sharp_llava, colours, tmp_path_factory.mktemp("a") / "run", **NF4_RUN)
    finished, _ = follow(run)
    assert finished["step"] == 6
    return run


def test_a_killed_run_resumes_to_the_same_adapter_as_an_uninterrupted_one(
    sharp_llava: Path, colours: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run = new_run(sharp_llava, colours, tmp_path / "run", **NF4_RUN)
    assert json.loads((run / "run.json").read_text())["quant"] == "nf4"
    start_and_kill(run, after_step=5)
    info = describe(run)
    assert info.state == "interrupted" and info.resumable and info.step == 4
    finished, events = follow(run, ["--resume"])
    resumed = next(e for e in events if e["event"] == "resumed")
    assert resumed["step"] == 4
    assert [e["step"] for e in events if e["event"] == "step"] == [5, 6]  # no step done twice
    assert finished["reason"] == "done" and finished["step"] == 6
    expected, got = adapter_tensors(uninterrupted), adapter_tensors(run)
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] - got[name]).abs().max() <= 1e-6, name
    ref_state = json.loads((ckpt.checkpoint_dir(uninterrupted, 6) / "state.json").read_text())
    state = json.loads((ckpt.checkpoint_dir(run, 6) / "state.json").read_text())
    assert [p["loss"] for p in state["history"] if p["event"] == "step"] == pytest.approx(
        [p["loss"] for p in ref_state["history"] if p["event"] == "step"], abs=1e-6
    )


def test_a_corrupt_checkpoint_is_detected_and_the_previous_one_used(
    sharp_llava: Path, colours: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run = new_run(sharp_llava, colours, tmp_path / "run", **NF4_RUN)
    start_and_kill(run, after_step=5)
    newest = ckpt.checkpoint_dir(run, 4)
    tensors = newest / ckpt.TENSORS
    data = bytearray(tensors.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit pattern inside the stored weights
    tensors.write_bytes(bytes(data))
    (run / "checkpoints" / "step-00000005").mkdir()  # a half-written one: no manifest
    finished, events = follow(run, ["--resume"])
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert any("step-00000005" in n and "manifest is missing" in n for n in notices)
    assert any("step-00000004" in n and "does not match its recorded hash" in n for n in notices)
    assert next(e for e in events if e["event"] == "resumed")["step"] == 2
    assert [e["step"] for e in events if e["event"] == "step"] == [3, 4, 5, 6]
    expected, got = adapter_tensors(uninterrupted), adapter_tensors(run)
    for name in expected:
        assert (expected[name] - got[name]).abs().max() <= 1e-6, name


def test_a_checkpoint_from_other_settings_is_never_resumed(
    sharp_llava: Path, colours: Path, uninterrupted: Path
) -> None:
    from engine.finetune.config import TrainConfig

    config = TrainConfig.load(uninterrupted)
    config.learning_rate *= 2
    assert ckpt.verify(ckpt.checkpoint_dir(uninterrupted, 6), config.fingerprint()) == (
        "it was written with other data or settings"
    )
    assert (
        ckpt.verify(
            ckpt.checkpoint_dir(uninterrupted, 6), TrainConfig.load(uninterrupted).fingerprint()
        )
        == ""
    )
