"""Deleting the model that is answering: refused while the answer streams, never an internal
error in the answer; allowed once it has ended. In-process through the real core and runtime."""

from __future__ import annotations

import shutil
import threading

from engine import protocol as p
from engine.core import Core
from engine.protocol import models as pm


def test_the_model_answering_is_not_deleted_until_the_answer_ends(tiny_model, tmp_path) -> None:
    managed = tmp_path / "models"
    model = managed / "demo"
    shutil.copytree(tiny_model("llava"), model)
    finished: dict[str, p.Finished] = {}
    delete_ended = threading.Event()
    deltas = 0
    core: Core

    def emit(event: p.Event) -> None:
        nonlocal deltas
        if isinstance(event, p.Finished):
            finished[event.job_id] = event
            if event.job_id == "delete-1":
                delete_ended.set()
        elif isinstance(event, p.Delta) and event.job_id == "chat":
            deltas += 1
            if deltas == 1:  # mid-answer; the answer waits here until the delete has ended
                core.handle(delete("delete-1"))
                assert delete_ended.wait(60), "the delete never ended"

    def delete(job_id: str) -> pm.DeleteModel:
        return pm.DeleteModel(job_id=job_id, model=str(model), managed_root=str(managed))

    core = Core(emit)
    try:
        core.handle(
            p.Chat(
                job_id="chat", model=str(model), quant="none", device="cpu",
                messages=[p.ChatMessage(role="user", text="Tell me a long story.")],
                sampling=p.Sampling(max_new_tokens=16),
            )
        )  # fmt: skip
        assert core.wait_idle(120)
        refused, answer = finished["delete-1"], finished["chat"]
        assert refused.reason == "error" and refused.error_code == p.ErrorCode.BAD_INPUT
        assert "is answering right now" in refused.message and "stop it" in refused.message
        assert answer.reason in ("done", "length"), answer.message
        assert model.is_dir()

        core.handle(delete("delete-2"))  # the answer has ended: now it goes
        assert core.wait_idle(60)
        assert finished["delete-2"].reason == "done", finished["delete-2"].message
        assert not model.exists() and core.runtime.backend is None
    finally:
        core.close()


def test_no_model_is_deleted_while_a_model_loads(tiny_model, tmp_path) -> None:
    managed = tmp_path / "models"
    model = managed / "demo"
    shutil.copytree(tiny_model("llava"), model)
    finished: dict[str, p.Finished] = {}
    delete_ended = threading.Event()
    core: Core

    def emit(event: p.Event) -> None:
        if isinstance(event, p.Finished):
            finished[event.job_id] = event
            if event.job_id == "delete":
                delete_ended.set()
        elif isinstance(event, p.Progress) and event.job_id == "load" and not finished:
            # The load waits here, mid-way, until the delete has ended.
            core.handle(
                pm.DeleteModel(job_id="delete", model=str(model), managed_root=str(managed))
            )
            assert delete_ended.wait(60), "the delete never ended"

    core = Core(emit)
    try:
        core.handle(p.LoadModel(job_id="load", model=str(model), quant="none", device="cpu"))
        assert core.wait_idle(120)
        assert finished["load"].reason == "done", finished["load"].message
        assert finished["delete"].error_code == p.ErrorCode.BAD_INPUT
        assert "loading right now" in finished["delete"].message and model.is_dir()
    finally:
        core.close()
