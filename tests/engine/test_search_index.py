"""Indexing folders through a real engine: exact vectors, incremental re-runs, models, PDF pages."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.protocol import search as ps
from engine.search.samples import make_image
from tests.engine.harness import EngineHarness, job_id

pytestmark = pytest.mark.slow

FORMATS = {
    "photo.jpg": ("photo", (300, 200)),
    "chart.png": ("chart", (160, 120)),
    "scan.webp": ("document", (120, 160)),
    "anim.gif": ("screenshot", (140, 100)),
    "old.bmp": ("receipt", (90, 130)),
    "page.tiff": ("whiteboard", (150, 110)),
    "phone.heic": ("photo", (128, 96)),
}


@pytest.fixture(scope="module")
def engine(tiny_cache: Path) -> Iterator[EngineHarness]:
    harness = EngineHarness()
    yield harness
    harness.close()


def write_formats(folder: Path, seed: int = 0) -> list[Path]:
    import pillow_heif

    pillow_heif.register_heif_opener()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, (kind, size)) in enumerate(FORMATS.items()):
        image = make_image(kind, size, seed + index)
        path = folder / name
        if name.endswith(".gif"):
            second = make_image("chart", size, seed + 99)
            image.save(path, save_all=True, append_images=[second], duration=200)
        else:
            image.save(path)
        paths.append(path)
    return paths


def write_pdf(path: Path, pages: int = 3) -> Path:
    images = [
        make_image(kind, (200, 280), n)
        for n, kind in enumerate(["document", "chart", "receipt", "photo"][:pages])
    ]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def index(
    engine: EngineHarness, data: Path, folders: list[Path], model: Path, **options: Any
) -> dict[str, Any]:
    command = ps.IndexFolders(
        job_id=job_id(),
        data_dir=str(data),
        model=str(model),
        folders=[str(folder) for folder in folders],
        **options,
    )
    finished, _ = engine.run(command)
    assert finished.reason == "done", finished.message
    assert finished.result is not None
    return finished.result


def stored(data: Path, model: Path) -> dict[tuple[str, int], np.ndarray]:
    """(path, page) -> stored vector, read straight from the index file."""
    with sqlite3.connect(data / "search" / "index.sqlite3") as db:
        rows = db.execute(
            "SELECT i.path, i.page, v.vector FROM items i JOIN vectors v ON v.content_id = i.content_id "
            "JOIN models m ON m.id = v.model_id WHERE m.name = ?",
            (str(model.resolve()),),
        ).fetchall()
    return {(path, page): np.frombuffer(blob, dtype=np.float32) for path, page, blob in rows}


def direct_image_features(model_path: Path, paths: list[Path]) -> np.ndarray:
    """What the model itself says: processor → get_image_features → L2-normalised."""
    import pillow_heif
    import torch
    from transformers import AutoModel, AutoProcessor

    from engine.documents.images import load_image

    pillow_heif.register_heif_opener()
    model = AutoModel.from_pretrained(model_path).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    vectors = []
    with torch.inference_mode():
        for path in paths:
            pixels = processor(images=[load_image(path)], return_tensors="pt")["pixel_values"]
            output = model.get_image_features(pixel_values=pixels)
            features = getattr(output, "pooler_output", output)[0]
            vectors.append((features / features.norm()).numpy())
    return np.stack(vectors)


@pytest.mark.parametrize(("family", "workers"), [("clip", 1), ("siglip", 0)])
def test_stored_vectors_equal_normalised_get_image_features(
    engine: EngineHarness, tiny_model: Any, tmp_path: Path, family: str, workers: int
) -> None:
    """Every format (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC) through worker processes (clip)
    and in the engine (siglip, a small folder): the stored vector is the model's own."""
    model = tiny_model(family)
    paths = write_formats(tmp_path / "photos")
    result = index(engine, tmp_path / "data", [tmp_path / "photos"], model, workers=workers)
    assert result["embedded"] == len(paths) and result["skipped"] == 0
    vectors = stored(tmp_path / "data", model)
    expected = direct_image_features(model, paths)
    for path, want in zip(paths, expected, strict=True):
        got = vectors[(str(path), 0)]
        assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=path.name)


def test_incremental_reindex_embeds_exactly_the_new_and_changed_files(
    engine: EngineHarness, tiny_model: Any, tmp_path: Path
) -> None:
    model = tiny_model("clip")
    folder, data = tmp_path / "photos", tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    for n in range(8):
        make_image(["photo", "chart", "receipt", "document"][n % 4], (96, 72), n).save(
            folder / f"{n}.png"
        )
    first = index(engine, data, [folder], model)
    assert (first["found"], first["embedded"]) == (8, 8)

    make_image("whiteboard", (96, 72), 50).save(folder / "new.png")  # added
    make_image("screenshot", (96, 72), 51).save(folder / "1.png")  # changed in place
    (folder / "2.png").rename(folder / "sub" / "2-renamed.png")  # renamed and moved
    (folder / "3.png").unlink()  # deleted
    os.utime(folder / "4.png", ns=(1_000_000_000, 1_000_000_000))  # touched, same bytes
    shutil.copy(folder / "5.png", folder / "sub" / "5-copy.png")  # copied
    second = index(engine, data, [folder], model)

    assert second["embedded"] == 2  # new.png and the changed 1.png, nothing else
    assert second["reused"] == 3  # the renamed, the touched and the copied file
    assert second["removed"] == 2  # 3.png, and 2.png under its old name
    assert second["unchanged"] == 4  # 0, 5, 6, 7
    vectors = stored(data, model)
    on_disk = {str(path) for path in folder.rglob("*.png")}
    assert {path for path, _ in vectors} == on_disk
    with sqlite3.connect(data / "search" / "index.sqlite3") as db:
        rows = db.execute(
            "SELECT i.path FROM items i JOIN vectors v ON v.content_id = i.content_id "
            "WHERE v.run_id = ?",
            (second["run_id"],),
        ).fetchall()
        contents = db.execute("SELECT COUNT(*) FROM contents").fetchone()[0]
    assert {row[0] for row in rows} == {str(folder / "new.png"), str(folder / "1.png")}
    assert contents == 8  # 9 files, one a copy; the old 1.png and 3.png contents are gone
    assert np.array_equal(
        vectors[(str(folder / "5.png"), 0)], vectors[(str(folder / "sub" / "5-copy.png"), 0)]
    )

    third = index(engine, data, [folder], model)
    assert (third["embedded"], third["reused"], third["removed"], third["unchanged"]) == (
        0,
        0,
        0,
        9,
    )


def test_each_model_keeps_its_own_vectors(
    engine: EngineHarness, tiny_model: Any, tmp_path: Path
) -> None:
    clip, siglip = tiny_model("clip"), tiny_model("siglip")
    folder, data = tmp_path / "photos", tmp_path / "data"
    write_formats(folder, seed=7)
    assert index(engine, data, [folder], clip)["embedded"] == len(FORMATS)
    assert index(engine, data, [folder], siglip)["embedded"] == len(FORMATS)  # no sharing
    assert index(engine, data, [folder], clip)["embedded"] == 0
    finished, _ = engine.run(ps.SearchStatus(job_id=job_id(), data_dir=str(data)))
    status = ps.decode_status(finished.result)
    assert {(m.model_type, m.vectors) for m in status.models} == {("clip", 7), ("siglip", 7)}
    assert status.items == len(FORMATS)
    for model in (clip, siglip):
        finished, _ = engine.run(
            ps.SearchQuery(
                job_id=job_id(), data_dir=str(data), text="a chart", model=str(model), top_k=3
            )
        )
        assert finished.reason == "done" and finished.result is not None
        assert finished.result["model"] == str(model.resolve())
        assert len(ps.decode_hits(finished.result)) == 3


def test_pdfs_are_indexed_by_their_first_page_or_every_page(
    engine: EngineHarness, tiny_model: Any, tmp_path: Path
) -> None:
    model = tiny_model("clip")
    folder, data = tmp_path / "docs", tmp_path / "data"
    folder.mkdir()
    pdf = write_pdf(folder / "report.pdf", pages=3)
    first = index(engine, data, [folder], model)
    assert first["embedded"] == 1 and set(stored(data, model)) == {(str(pdf), 0)}
    every = index(engine, data, [folder], model, pdf_pages="all")
    assert every["embedded"] == 2  # pages 2 and 3; page 1 is already there
    assert set(stored(data, model)) == {(str(pdf), page) for page in range(3)}
    back = index(engine, data, [folder], model, pdf_pages="first")
    assert back["embedded"] == 0 and set(stored(data, model)) == {(str(pdf), 0)}


def test_a_missing_folder_fails_before_any_model_loads(
    engine: EngineHarness, tmp_path: Path
) -> None:
    finished, _ = engine.run(
        ps.IndexFolders(
            job_id=job_id(),
            data_dir=str(tmp_path / "data"),
            model="no/such-model",
            folders=[str(tmp_path / "nope")],
        )
    )
    assert finished.reason == "error" and finished.error_code == "bad_input"
    assert "Folder not found" in finished.message


def test_updating_every_folder_leaves_out_a_gone_one_and_hides_its_files(
    engine: EngineHarness, tiny_model: Any, tmp_path: Path
) -> None:
    """A deleted (or unmounted) folder does not stop the others from updating; its entries
    stay in the index for when it comes back, listed in the result and left out of results."""
    model = tiny_model("clip")
    data, kept, gone = tmp_path / "data", tmp_path / "kept", tmp_path / "gone"
    for number, folder in enumerate((kept, gone)):
        folder.mkdir()
        for n, kind in enumerate(["photo", "chart", "receipt"]):
            make_image(kind, (96, 72), 10 * number + n).save(folder / f"{kind}.png")
    assert index(engine, data, [kept, gone], model)["embedded"] == 6
    shutil.rmtree(gone)
    make_image("whiteboard", (96, 72), 99).save(kept / "new.png")

    update = index(engine, data, [], model)  # "update every folder"
    assert (update["embedded"], update["unchanged"], update["removed"]) == (1, 3, 0)
    assert update["gone"] == [{"path": str(gone), "items": 3}]
    finished, _ = engine.run(ps.SearchStatus(job_id=job_id(), data_dir=str(data)))
    status = ps.decode_status(finished.result)
    assert {(f.path, f.items, f.gone) for f in status.folders} == {
        (str(kept), 4, False),
        (str(gone), 3, True),
    }
    finished, _ = engine.run(
        ps.SearchQuery(job_id=job_id(), data_dir=str(data), text="a receipt", top_k=10)
    )
    hits = ps.decode_hits(finished.result)
    assert sorted(Path(hit.path).name for hit in hits) == sorted(
        ["photo.png", "chart.png", "receipt.png", "new.png"]
    )
    assert all(hit.folder == str(kept) for hit in hits)

    shutil.rmtree(kept)
    finished, _ = engine.run(ps.IndexFolders(job_id=job_id(), data_dir=str(data), model=str(model)))
    assert finished.reason == "error" and finished.error_code == "bad_input"
    assert "No indexed folder can be found" in finished.message
