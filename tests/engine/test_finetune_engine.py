"""Fine-tuning through the real engine process: plan, train with stop-and-save and resume,
then use the adapter in chat, evaluate it against the base, merge and export it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine import protocol as p
from engine.protocol import finetune as pf
from tests.engine.harness import EngineHarness, job_id
from tests.engine.test_finetune_data import make_colour_dataset, sharp_copy

pytestmark = pytest.mark.slow
PROMPT = "Describe this image."


@pytest.fixture(scope="module")
def engine(tiny_cache: Path) -> Iterator[EngineHarness]:
    harness = EngineHarness()
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def model(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sharp_copy(tiny_model("llava"), tmp_path_factory.mktemp("sharp") / "llava")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_dataset(tmp_path_factory.mktemp("colours") / "data", 8)


def collect(
    engine: EngineHarness,
    command: p.Command,
    on_event: Callable[[p.Event], None] | None = None,
    timeout: float = 300,
) -> tuple[p.Finished, list[p.Event]]:
    engine.send(command)
    events: list[p.Event] = []
    for event in engine.job_events(command.job_id, timeout):  # type: ignore[attr-defined]
        events.append(event)
        if on_event is not None:
            on_event(event)
        if isinstance(event, p.Finished):
            return event, events
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def trained(
    engine: EngineHarness, model: Path, data: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Start a run, stop it (stop and save) after a few steps, resume it to the end."""
    run_dir = tmp_path_factory.mktemp("runs") / "colours"
    settings = pf.FinetuneSettings(epochs=25, learning_rate=1e-2, caption_prompt=PROMPT)
    start = pf.StartFinetune(
        job_id=job_id(), model=str(model), data=str(data), out_dir=str(run_dir), settings=settings
    )

    def stop_after_five(event: p.Event) -> None:
        if isinstance(event, p.Progress) and event.stage == "training" and event.current >= 5:
            engine.send(p.Cancel(job_id=start.job_id))

    stopped, first = collect(engine, start, stop_after_five)
    resume = pf.ResumeFinetune(job_id=job_id(), run_dir=str(run_dir))
    done, second = collect(engine, resume)
    return {"run_dir": run_dir, "stopped": stopped, "first": first, "done": done, "second": second}


def test_inspect_dataset_job_reports_rows_split_and_problems(
    engine: EngineHarness, data: Path, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    (folder / "green.txt").write_text("")
    finished, _ = engine.run(pf.InspectDataset(job_id=job_id(), folder=str(folder)))
    report = pf.decode_report(finished.result)
    assert report.format == "sidecar_txt" and len(report.rows) == 8 and report.probe_rows == 8
    [issue] = report.issues
    assert (
        issue.kind == "empty_text" and issue.blocking and report.rows[issue.row or 0].answer == ""
    )
    fixed, _ = engine.run(
        pf.InspectDataset(job_id=job_id(), folder=str(folder), fixes=["empty_text"])
    )
    assert (
        len(pf.decode_report(fixed.result).rows) == 7
        and pf.decode_report(fixed.result).issues == []
    )
    missing, _ = engine.run(pf.InspectDataset(job_id=job_id(), folder=str(tmp_path / "nope")))
    assert missing.reason == "error" and missing.error_code == p.ErrorCode.BAD_INPUT


def test_plan_job_explains_every_setting_and_checks_the_worst_batch(
    engine: EngineHarness, model: Path, data: Path
) -> None:
    finished, events = collect(
        engine, pf.PlanFinetune(job_id=job_id(), model=str(model), data=str(data), trial=True)
    )
    assert finished.reason == "done", finished.message
    plan = pf.decode_plan(finished.result)
    names = {choice.name for choice in plan.settings}
    assert {"quant", "rank", "learning_rate", "batch_size", "epochs", "max_length"} <= names
    assert all(choice.reason for choice in plan.settings)
    assert plan.trainable["language"] > 0 and plan.trainable["vision"] == 0
    assert plan.targets[0].startswith("(?:model\\.language_model")
    assert {item.name for item in plan.memory} >= {"weights", "adapter", "optimiser", "activations"}
    assert plan.verdict == "fits" and plan.total_bytes > 0
    assert plan.trial is not None and plan.trial.ok and plan.trial.peak_bytes > 0
    assert [span.kind for span in plan.preview] == ["prompt", "image", "prompt", "trained"]
    assert plan.longest_image_tokens == 16 and plan.steps_per_epoch == 4
    assert any(isinstance(e, p.Progress) and e.stage == "trial" for e in events)
    # The data check comes first, as a partial result, so a caller can list its every problem.
    reports = [e.data for e in events if isinstance(e, p.PartialResult) and "report" in e.data]
    assert (
        len(reports) == 1
        and len(pf.decode_report(reports[0]).rows) == plan.train_rows + plan.eval_rows
    )


def test_training_streams_metrics_stops_and_saves_on_cancel_and_resumes(
    trained: dict[str, Any],
) -> None:
    stopped: p.Finished = trained["stopped"]
    assert stopped.reason == "cancelled", stopped.message
    run = pf.decode_run(stopped.result)
    assert run.resumable and run.state == "stopped" and 5 <= run.step < 100
    partials = [e.data for e in trained["first"] if isinstance(e, p.PartialResult)]
    train = [msgspec.convert(d["train"], pf.TrainMetrics) for d in partials if "train" in d]
    assert train and "report" in partials[0] and "plan" in partials[1]
    last = train[-1]
    assert last.total_steps == 100 and last.loss > 0 and last.learning_rate > 0
    assert last.samples_per_s > 0 and last.peak_memory_bytes > 0 and last.eta_s is not None
    progress = [e for e in trained["first"] if isinstance(e, p.Progress) and e.stage == "training"]
    assert progress and "loss" in progress[-1].message and progress[-1].total == 100
    assert any("eval" in d for d in partials) and any("checkpoint" in d for d in partials)

    done: p.Finished = trained["done"]
    assert done.reason == "done", done.message
    final = pf.decode_run(done.result)
    assert final.state == "done" and final.step == 100 and final.adapter_dir
    second = [e.data for e in trained["second"] if isinstance(e, p.PartialResult)]
    assert second[0]["history"], "a resumed job first replays the curve so far"
    resumed = next(d["resumed"] for d in second if "resumed" in d)
    assert resumed["step"] == run.step
    steps = [d["train"]["step"] for d in second if "train" in d]
    assert steps[0] == run.step + 1 and steps[-1] == 100


def _answer(engine: EngineHarness, model: Path, image: str, adapter: str | None) -> str:
    chat = p.Chat(
        job_id=job_id(),
        messages=[p.ChatMessage(role="user", text=PROMPT, images=[image])],
        model=str(model),
        quant="none",
        device="cpu",
        sampling=p.Sampling(max_new_tokens=20),
        adapter=adapter,
    )
    finished, text = engine.run(chat)
    assert finished.reason in ("done", "length"), finished.message
    return text


def test_the_adapter_loads_in_chat_and_changes_its_output(
    engine: EngineHarness, trained: dict[str, Any], model: Path, data: Path
) -> None:
    adapter = pf.decode_run(trained["done"].result).adapter_dir
    red = str(data / "red.png")
    base = _answer(engine, model, red, None)
    tuned = _answer(engine, model, red, adapter)
    assert tuned != base
    assert tuned.strip() == "A plain red square."  # it learned the caption it was shown
    assert (
        _answer(engine, model, str(data / "green.png"), adapter).strip() == "A plain green square."
    )
    assert _answer(engine, model, red, None) == base  # the base again: the adapter was unloaded


def test_evaluation_compares_base_and_adapter_side_by_side(
    engine: EngineHarness, trained: dict[str, Any]
) -> None:
    run_dir = str(trained["run_dir"])
    finished, _ = collect(
        engine, pf.EvaluateAdapter(job_id=job_id(), run_dir=run_dir, max_new_tokens=20)
    )
    assert finished.reason == "done", finished.message
    evaluation = pf.decode_evaluation(finished.result)
    assert evaluation.on == "training_rows" and evaluation.rows == 8  # 8 rows: none held out
    assert evaluation.adapter_loss < 0.5 * evaluation.base_loss
    assert len(evaluation.probes) == 8
    assert all(probe.base != probe.adapter for probe in evaluation.probes)
    assert evaluation.metrics["adapter"]["exact_match"] > evaluation.metrics["base"]["exact_match"]
    assert evaluation.kind == "text"


def test_merge_into_a_full_precision_base_reproduces_the_adapter(
    engine: EngineHarness, trained: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    finished, _ = collect(
        engine, pf.MergeAdapter(job_id=job_id(), run_dir=str(trained["run_dir"]), out_dir=str(out))
    )
    assert finished.reason == "done", finished.message
    merged = finished.result["merged"]  # type: ignore[index]
    assert merged["matches"] and merged["same_predictions"] and merged["dtype"] == "float32"
    assert merged["max_logit_diff"] < 1e-3
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))


def test_export_copies_the_adapter_and_runs_are_listed_for_resume(
    engine: EngineHarness, trained: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "export"
    finished, _ = engine.run(
        pf.ExportAdapter(job_id=job_id(), run_dir=str(trained["run_dir"]), out_dir=str(out))
    )
    assert finished.reason == "done"
    assert {"adapter_config.json", "adapter_model.safetensors", "visiondesk_adapter.json"} <= set(
        finished.result["files"]  # type: ignore[index]
    )
    listed, _ = engine.run(
        pf.ListFinetuneRuns(job_id=job_id(), runs_dir=str(trained["run_dir"].parent))
    )
    [run] = listed.result["runs"]  # type: ignore[index]
    assert run["state"] == "done" and run["step"] == 100 and not run["resumable"]
    assert run["history"] == []  # asked for, each run's curve comes too
    with_curve, _ = engine.run(
        pf.ListFinetuneRuns(job_id=job_id(), runs_dir=str(trained["run_dir"]), history=True)
    )
    [run] = with_curve.result["runs"]  # type: ignore[index]
    steps = [point["step"] for point in run["history"] if point["event"] == "step"]
    assert steps[-1] == 100
    again, _ = engine.run(pf.ResumeFinetune(job_id=job_id(), run_dir=str(trained["run_dir"])))
    assert again.reason == "error" and "nothing to resume" in again.message
    pause, _ = engine.run(pf.PauseFinetune(job_id=job_id(), run_dir=str(trained["run_dir"])))
    assert pause.error_code == p.ErrorCode.BAD_INPUT and "No run is training" in pause.message


def test_export_and_merge_ask_for_a_full_destination_path(
    engine: EngineHarness, tmp_path: Path
) -> None:
    """An empty or relative destination is not read against the engine's working folder."""
    for command in (
        pf.ExportAdapter(job_id=job_id(), run_dir=str(tmp_path), out_dir=""),
        pf.MergeAdapter(job_id=job_id(), run_dir=str(tmp_path), out_dir="merged"),
    ):
        finished, _ = engine.run(command)
        assert finished.error_code == p.ErrorCode.BAD_INPUT
        assert finished.message.startswith("Choose a destination folder for the ")


def test_chat_keeps_answering_while_a_run_trains(
    engine: EngineHarness, model: Path, data: Path, tmp_path: Path
) -> None:
    start = pf.StartFinetune(
        job_id=job_id(),
        model=str(model),
        data=str(data),
        out_dir=str(tmp_path / "run"),
        settings=pf.FinetuneSettings(epochs=40),
    )
    engine.send(start)
    began = time.monotonic()
    text = _answer(engine, model, str(data / "red.png"), None)  # answered while training runs
    assert text
    engine.send(p.Cancel(job_id=start.job_id))
    finished = next(e for e in engine.job_events(start.job_id) if isinstance(e, p.Finished))
    assert finished.reason in ("cancelled", "done")
    assert time.monotonic() - began < 120
