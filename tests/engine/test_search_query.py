"""Querying the index through a real engine: ranking, image + text, tags, filters, thumbnails."""

from __future__ import annotations

import base64
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import protocol as p
from engine.protocol import search as ps
from engine.search.samples import KINDS, make_image
from tests.engine.harness import EngineHarness, job_id

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tiny_cache: Path) -> Iterator[EngineHarness]:
    harness = EngineHarness()
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def indexed(
    engine: EngineHarness, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Two folders of six images each, indexed with the tiny CLIP."""
    root = tmp_path_factory.mktemp("query")
    folders = [root / "home", root / "work"]
    for number, folder in enumerate(folders):
        folder.mkdir()
        for index, kind in enumerate(KINDS):
            make_image(kind, (120, 90), 10 * number + index).save(folder / f"{kind}.png")
    model = tiny_model("clip")
    finished, _ = engine.run(
        ps.IndexFolders(
            job_id=job_id(),
            data_dir=str(root / "data"),
            model=str(model),
            folders=[str(f) for f in folders],
        )
    )
    assert finished.reason == "done" and finished.result and finished.result["embedded"] == 12
    return {"data": root / "data", "folders": folders, "model": model}


def query(engine: EngineHarness, data: Path, **fields: Any) -> p.Finished:
    finished, _ = engine.run(ps.SearchQuery(job_id=job_id(), data_dir=str(data), **fields))
    return finished


def text_vector(model_path: Path, text: str) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_path).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    with torch.inference_mode():
        inputs = processor(text=[text], padding="longest", return_tensors="pt")
        output = model.get_text_features(**inputs)
    features = getattr(output, "pooler_output", output)[0]
    return (features / features.norm()).numpy()


def set_vector(data: Path, path: Path, vector: np.ndarray) -> None:
    """Make one stored image vector what the test wants (and tell the engine it changed)."""
    vector = (vector / np.linalg.norm(vector)).astype(np.float32)
    with sqlite3.connect(data / "search" / "index.sqlite3") as db:
        content_id = db.execute(
            "SELECT content_id FROM items WHERE path = ?", (str(path),)
        ).fetchone()[0]
        db.execute(
            "UPDATE vectors SET vector = ? WHERE content_id = ?", (vector.tobytes(), content_id)
        )
        db.execute("UPDATE models SET generation = generation + 1")


def vector_of(data: Path, path: Path) -> np.ndarray:
    with sqlite3.connect(data / "search" / "index.sqlite3") as db:
        blob = db.execute(
            "SELECT v.vector FROM vectors v JOIN items i ON i.content_id = v.content_id WHERE i.path = ?",
            (str(path),),
        ).fetchone()[0]
    return np.frombuffer(blob, dtype=np.float32)


def test_text_query_returns_the_image_whose_vector_was_made_most_similar(
    engine: EngineHarness, indexed: dict[str, Any]
) -> None:
    data, home, model = indexed["data"], indexed["folders"][0], indexed["model"]
    text = "whiteboard with a bar chart"
    wanted = text_vector(model, text)
    target = home / "receipt.png"
    noise = np.random.default_rng(0).standard_normal(wanted.shape[0]).astype(np.float32)
    set_vector(data, target, wanted + 0.05 * noise / np.linalg.norm(noise))
    finished = query(engine, data, text=text, top_k=12)
    assert finished.reason == "done", finished.message
    hits = ps.decode_hits(finished.result)
    assert hits[0].path == str(target) and hits[0].score > 0.99
    assert len(hits) == 12 and finished.result["exact"] is True
    for hit in hits:  # every score is the cosine with the model's own text vector
        assert hit.score == pytest.approx(float(vector_of(data, Path(hit.path)) @ wanted), abs=1e-4)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_image_query_finds_itself_and_a_text_modifier_moves_it(
    engine: EngineHarness, indexed: dict[str, Any]
) -> None:
    data, work, model = indexed["data"], indexed["folders"][1], indexed["model"]
    photo = work / "photo.png"
    alone = ps.decode_hits(query(engine, data, image=str(photo), top_k=3).result)
    assert alone[0].path == str(photo) and alone[0].score == pytest.approx(1.0, abs=1e-4)
    # Image + text: the vector half-way between the photo and the text wins.
    text = "the same place at night"
    combined = vector_of(data, photo) * 0.5 + text_vector(model, text) * 0.5
    set_vector(data, work / "document.png", combined)
    hits = ps.decode_hits(query(engine, data, image=str(photo), text=text, top_k=3).result)
    assert hits[0].path == str(work / "document.png") and hits[0].score > 0.999


def test_folder_filter_and_thumbnails(engine: EngineHarness, indexed: dict[str, Any]) -> None:
    data, work = indexed["data"], indexed["folders"][1]
    finished = query(engine, data, text="a chart", folders=[str(work)], top_k=20)
    hits = ps.decode_hits(finished.result)
    assert len(hits) == 6 and all(hit.path.startswith(str(work) + "/") for hit in hits)
    finished, _ = engine.run(
        ps.GetThumbnails(job_id=job_id(), data_dir=str(data), ids=[hit.id for hit in hits])
    )
    thumbnails = finished.result["thumbnails"]
    assert set(thumbnails) == {str(hit.id) for hit in hits}
    from PIL import Image

    thumbnail = Image.open(io.BytesIO(base64.b64decode(thumbnails[str(hits[0].id)])))
    assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 192
    assert (hits[0].width, hits[0].height) == (120, 90)


def test_a_folder_outside_the_index_is_named_not_searched_to_nothing(
    engine: EngineHarness, indexed: dict[str, Any]
) -> None:
    data, home = indexed["data"], indexed["folders"][0]
    typo = home.parent / "hoem"
    finished = query(engine, data, text="a chart", folders=[str(typo)])
    assert finished.reason == "error" and finished.error_code == "bad_input"
    assert str(typo) in finished.message and str(home) in finished.message
    # Around an indexed folder (its parent) is fine: it holds all of it.
    around = query(engine, data, text="a chart", folders=[str(home.parent)], top_k=20)
    assert around.reason == "done" and len(ps.decode_hits(around.result)) == 12


def test_zero_shot_tags_are_stored_and_filter_results(
    engine: EngineHarness, indexed: dict[str, Any]
) -> None:
    from engine.search.encoder import Encoder
    from engine.search.tagging import label_vectors, scores

    data, model = indexed["data"], indexed["model"]
    labels = ["invoice", "bar chart", "photo of a person"]
    finished, _ = engine.run(ps.TagImages(job_id=job_id(), data_dir=str(data), labels=labels))
    assert finished.reason == "done", finished.message
    assert finished.result["scoring"] == "softmax" and finished.result["images"] == 12

    # The stored probabilities are the softmax of the model's logit scale times the cosines
    # with the prompt-ensemble label vectors.
    encoder = Encoder.load(str(model))
    texts = label_vectors(encoder, labels, list(ps.DEFAULT_TAG_TEMPLATES))
    scale, bias = encoder.logit_scale_and_bias()
    assert bias is None
    with sqlite3.connect(data / "search" / "index.sqlite3") as db:
        rows = db.execute("SELECT content_id, vector FROM vectors").fetchall()
        stored = {
            (c, label): s for c, label, s in db.execute("SELECT content_id, label, score FROM tags")
        }
    images = np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in rows])
    expected = scores(images, texts, scale, None)
    for row, (content_id, _) in enumerate(rows):
        for column, label in enumerate(labels):
            assert stored[(content_id, label)] == pytest.approx(
                float(expected[row, column]), abs=1e-5
            )
    assert np.allclose(expected.sum(axis=1), 1.0, atol=1e-5)

    # A threshold that some images pass: the tag filter returns exactly those.
    chart = [stored[(content_id, "bar chart")] for content_id, _ in rows]
    threshold = float(np.median(chart))
    engine.run(
        ps.TagImages(job_id=job_id(), data_dir=str(data), labels=labels, threshold=threshold)
    )
    hits = ps.decode_hits(query(engine, data, text="anything", tags=["bar chart"], top_k=50).result)
    want = {
        content_id for (content_id, _), score in zip(rows, chart, strict=True) if score >= threshold
    }
    assert {hit.id for hit in hits} == want and 0 < len(want) < 12
    assert all("bar chart" in hit.tags for hit in hits)
    unknown = query(engine, data, text="anything", tags=["no such tag"])
    assert unknown.reason == "error" and unknown.error_code == "bad_input"


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_tag_probabilities_equal_the_models_own_logits(tiny_model: Any, family: str) -> None:
    """CLIP's softmax and SigLIP's sigmoid over the model's forward logits (one prompt)."""
    import torch
    from transformers import AutoModel, AutoProcessor

    from engine.search.encoder import Encoder
    from engine.search.tagging import label_vectors, scores

    path = tiny_model(family)
    labels = ["a receipt", "a chart", "a mountain"]
    images = [make_image(kind, (64, 48), n) for n, kind in enumerate(("receipt", "chart", "photo"))]
    encoder = Encoder.load(str(path), device="cpu")
    pixels = AutoProcessor.from_pretrained(path)(images=images, return_tensors="np")["pixel_values"]
    ours = scores(
        encoder.encode_pixels(pixels),
        label_vectors(encoder, labels, ["{}"]),
        *encoder.logit_scale_and_bias(),
    )
    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    padding = "max_length" if family == "siglip" else "longest"
    inputs = processor(text=labels, images=images, padding=padding, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits_per_image
    theirs = torch.sigmoid(logits) if family == "siglip" else logits.softmax(dim=-1)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)


def test_forgetting_a_folder_removes_its_images_from_results(
    engine: EngineHarness, tiny_model: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    keep, drop = tmp_path / "keep", tmp_path / "drop"
    for folder in (keep, drop):
        folder.mkdir()
        for index in range(3):
            make_image(KINDS[index], (64, 48), index + len(folder.name)).save(
                folder / f"{index}.png"
            )
    engine.run(
        ps.IndexFolders(
            job_id=job_id(),
            data_dir=str(data),
            model=str(tiny_model("clip")),
            folders=[str(keep), str(drop)],
        )
    )
    finished, _ = engine.run(
        ps.RemoveFolders(job_id=job_id(), data_dir=str(data), folders=[str(drop)])
    )
    assert finished.reason == "done" and finished.result["removed"] == 3
    hits = ps.decode_hits(query(engine, data, text="x", top_k=10).result)
    assert len(hits) == 3 and all(hit.folder == str(keep) for hit in hits)
    assert all(Path(keep / f"{index}.png").exists() for index in range(3))
    assert all(Path(drop / f"{index}.png").exists() for index in range(3))  # files untouched


def test_queries_fail_clearly(
    engine: EngineHarness, tmp_path: Path, indexed: dict[str, Any]
) -> None:
    empty = query(engine, tmp_path / "never-indexed", text="cats")
    assert empty.reason == "error" and empty.error_code == ps.SearchErrorCode.NO_INDEX
    assert "Index a folder first" in empty.message
    blank = query(engine, indexed["data"], text="   ")
    assert blank.reason == "error" and blank.error_code == "bad_input"
    missing = query(engine, indexed["data"], image=str(tmp_path / "gone.png"))
    assert missing.reason == "error" and "Image not found" in missing.message
