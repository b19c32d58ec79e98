"""A search answers while a folder is being indexed, with the same resident model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import protocol as p
from engine.protocol import search as ps
from engine.search.samples import KINDS, make_image
from tests.engine.harness import EngineHarness, job_id

pytestmark = pytest.mark.slow


def test_a_query_is_answered_while_an_index_run_goes_on(tiny_model: Any, tmp_path: Path) -> None:
    model = str(tiny_model("clip"))
    first, big = tmp_path / "first", tmp_path / "big"
    first.mkdir()
    big.mkdir()
    for index, kind in enumerate(KINDS):
        make_image(kind, (120, 90), index).save(first / f"{kind}.png")
    for index in range(400):
        make_image(KINDS[index % len(KINDS)], (96, 72), 100 + index).save(big / f"{index}.png")
    data = str(tmp_path / "data")
    engine = EngineHarness()
    try:
        done, _ = engine.run(
            ps.IndexFolders(job_id=job_id(), data_dir=data, model=model, folders=[str(first)])
        )
        assert done.reason == "done", done.message

        run = ps.IndexFolders(
            job_id=job_id(), data_dir=data, model=model, folders=[str(big)], batch_size=1, workers=1
        )
        engine.send(run)
        search = ps.SearchQuery(job_id=job_id(), data_dir=data, text="a chart", top_k=3)
        sent = False
        order: list[str] = []
        while len(order) < 2:
            event = engine.next_event(timeout=300)
            if (
                not sent
                and isinstance(event, p.Progress)
                and event.job_id == run.job_id
                and event.stage == "indexing"
            ):
                engine.send(search)  # the index run is under way
                sent = True
            if isinstance(event, p.Finished):
                assert event.reason == "done", event.message
                order.append("search" if event.job_id == search.job_id else "index")
                if event.job_id == search.job_id:
                    assert event.result is not None and len(event.result["hits"]) == 3
        assert sent
        assert order == ["search", "index"], "the search waited for the index run"
    finally:
        engine.close()


def test_another_model_waits_until_no_job_uses_the_resident_one(tiny_model: Any) -> None:
    import threading

    from engine.models.embedder import EmbedSpec, get_embedder, lease_embedder, unload_embedder

    clip = EmbedSpec(str(tiny_model("clip")), device="cpu")
    siglip = EmbedSpec(str(tiny_model("siglip")), device="cpu")
    loaded = threading.Event()
    waiting = threading.Thread(target=lambda: (get_embedder(siglip), loaded.set()))
    try:
        with lease_embedder(clip) as embedder:
            unload_embedder()
            assert embedder.model is not None, "an embedder in use is never unloaded"
            with lease_embedder(EmbedSpec(clip.model, device="cpu")) as shared:
                assert shared is embedder  # the same model is shared, not loaded twice
            waiting.start()
            assert not loaded.wait(0.5), "another model replaced the one in use"
            assert embedder.model is not None
        assert loaded.wait(120)
        assert embedder.model is None  # replaced once the lease ended
    finally:
        waiting.join(timeout=120)
        unload_embedder()
