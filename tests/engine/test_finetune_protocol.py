"""Fine-tuning messages survive the wire, and the new ``adapter`` fields are backward compatible."""

from __future__ import annotations

import json

import msgspec
import pytest

from engine import protocol as p
from engine.protocol import finetune as pf

SETTINGS = pf.FinetuneSettings(
    recipe="vision_language", rank=8, learning_rate=1e-4, fixes=["duplicate"]
)
COMMANDS: list[p.Command] = [
    pf.InspectDataset(job_id="a", folder="/data", fixes=["empty_text"]),
    pf.PlanFinetune(job_id="b", model="/m", data="/data", settings=SETTINGS, trial=True),
    pf.StartFinetune(job_id="c", model="/m", data="/data", out_dir="/runs/x", settings=SETTINGS),
    pf.ResumeFinetune(job_id="d", run_dir="/runs/x"),
    pf.ListFinetuneRuns(job_id="e", runs_dir="/runs"),
    pf.PauseFinetune(job_id="e2", run_dir="/runs/x"),
    pf.StopFinetune(job_id="e3", run_dir="/runs/x"),
    pf.EvaluateAdapter(job_id="f", run_dir="/runs/x", max_new_tokens=16, probes=4),
    pf.MergeAdapter(job_id="g", run_dir="/runs/x", out_dir="/merged"),
    pf.ExportAdapter(job_id="h", run_dir="/runs/x", out_dir="/export"),
    p.LoadModel(job_id="i", model="/m", adapter="/runs/x/adapter"),
    p.Chat(job_id="j", messages=[p.ChatMessage(role="user", text="hi")], model="/m", adapter="/a"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_finetune_command_round_trips(command: p.Command) -> None:
    assert p.decode_command(p.encode(command)) == command


def test_adapter_fields_are_optional_for_older_clients() -> None:
    old = json.dumps({"type": "chat", "job_id": "x", "messages": [{"role": "user", "text": "hi"}]})
    chat = p.decode_command(old)
    assert isinstance(chat, p.Chat) and chat.adapter is None and chat.image_max_pixels is None
    load = p.decode_command(json.dumps({"type": "load_model", "job_id": "y", "model": "/m"}))
    assert isinstance(load, p.LoadModel) and load.adapter is None
    fields = list(p.Chat.__struct_fields__)  # new fields only at the end, in the order added
    added = ["adapter", "image_max_pixels", "allow_pickle", "trust_remote_code"]
    assert fields[fields.index("adapter") :] == added
    assert chat.allow_pickle is False and chat.trust_remote_code is False
    assert list(p.LoadModel.__struct_fields__)[-1] == "adapter"


def test_results_decode_into_their_types() -> None:
    run = pf.RunInfo(
        run_dir="/r",
        model="m",
        recipe="language",
        state="stopped",
        step=3,
        total_steps=9,
        resumable=True,
    )
    assert pf.decode_run({"run": msgspec.to_builtins(run)}) == run
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"run_dir": "/r"}, pf.RunInfo)
    with pytest.raises(p.DecodeError):
        p.decode_command(json.dumps({"type": "start_finetune", "job_id": "z", "model": "/m"}))
