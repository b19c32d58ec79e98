"""Dataset import, validation with one-click fixes, and the held-out/probe split.

The helpers at the top (a generated colour dataset, a "sharp" tiny model) are shared by the other
fine-tuning test modules.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import BadInput
from engine.finetune.data import read_folder
from engine.finetune.validate import held_out_size, inspect, to_report, write_prepared

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "purple": (140, 30, 160),
    "orange": (240, 140, 20),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}


def make_colour_dataset(folder: Path, count: int = 8) -> Path:
    """``count`` plain-colour images with sidecar captions naming the colour (memorisable)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for index in range(count):
        name = names[index % len(names)]
        stem = name if index < len(names) else f"{name}-{index}"
        shade = tuple(max(0, c - 3 * (index // len(names))) for c in COLOURS[name])
        Image.new("RGB", (48, 40), shade).save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(f"A plain {name} square.", encoding="utf-8")
    return folder


def sharp_copy(source: Path, target: Path) -> Path:
    """A copy of a tiny random model whose final norm is scaled up tenfold.

    Random weights (std 0.02) behind a frozen RMSNorm cap the logits at about +-1.3, so no adapter
    can make the tiny model confident and its loss cannot fall far; a trained model has no such
    cap. Scaling the final norm gives the tiny model the range a real one has.
    """
    from safetensors.torch import load_file, save_file

    if (target / "config.json").is_file():
        return target
    shutil.copytree(source, target)
    weights = load_file(str(target / "model.safetensors"))
    scaled = [
        name for name in weights if name.endswith("model.norm.weight") and "vision" not in name
    ]
    assert scaled, "the tiny model has no final norm to scale"
    for name in scaled:
        weights[name] = weights[name] * 10
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


# --- import ------------------------------------------------------------------------------------


def test_sidecar_captions_become_caption_examples(tmp_path: Path) -> None:
    folder = make_colour_dataset(tmp_path / "data", 3)
    (folder / "lonely.txt").write_text("a caption without an image")
    Image.new("RGB", (40, 40)).save(folder / "uncaptioned.png")
    result = read_folder(folder, caption_prompt="Describe.")
    assert result.format == "sidecar_txt" and result.kind == "caption"
    assert sorted(e.answer for e in result.examples) == [
        "A plain blue square.",
        "A plain green square.",
        "A plain red square.",
    ]
    assert all(e.prompt == "Describe." and len(e.images) == 1 for e in result.examples)
    problems = " ".join(p.message for p in result.problems)
    assert "uncaptioned.png has no caption file" in problems
    assert "lonely.txt is a caption without an image" in problems


def test_metadata_jsonl_reads_captions_questions_and_messages(tmp_path: Path) -> None:
    folder = make_colour_dataset(tmp_path / "data", 2)
    rows = [
        {"image": "red.png", "caption": "Red."},
        {"file_name": "green.png", "question": "Colour?", "answer": "Green."},
        {
            "images": ["red.png"],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
                {"role": "assistant", "content": "A square."},
                {"role": "user", "content": "Colour?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
            ],
        },
        {"image": "red.png"},
        "not an object",
    ]
    lines = [json.dumps(row) for row in rows]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    result = read_folder(folder)
    assert result.format == "metadata_jsonl"
    kinds = [example.kind for example in result.examples]
    assert kinds == ["caption", "qa", "messages"]
    chat = result.examples[2]
    assert [t.role for t in chat.turns] == ["system", "user", "assistant", "user", "assistant"]
    assert chat.turns[1].images == [str(folder / "red.png")] and chat.answer == "Red."
    assert [p.source for p in result.problems] == ["metadata.jsonl line 4", "metadata.jsonl line 5"]
    assert "no text" in result.problems[0].message


def test_tab_separated_csv_is_detected(tmp_path: Path) -> None:
    folder = make_colour_dataset(tmp_path / "data", 2)
    with (folder / "pairs.tsv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["filepath", "title"])  # open_clip's default column names are not ours
        writer.writerow(["red.png", "x"])
    with pytest.raises(BadInput, match="no image column"):
        read_folder(folder)
    (folder / "pairs.tsv").unlink()
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["image", "question", "answer"])
        writer.writerow(["red.png", "Which colour, roughly?", "Red, mostly."])
        writer.writerow(["green.png", "Which colour?", "Green."])
    result = read_folder(folder)
    assert result.format == "csv" and result.kind == "qa"
    assert [e.answer for e in result.examples] == ["Red, mostly.", "Green."]


def test_a_folder_without_data_is_refused_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="holds no training data"):
        read_folder(tmp_path / "empty")
    with pytest.raises(BadInput, match="not found"):
        read_folder(tmp_path / "missing")


# --- validation and fixes -------------------------------------------------------------------------


def _messy_dataset(folder: Path) -> Path:
    make_colour_dataset(folder, 3)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "broken.txt").write_text("A broken file.")
    shutil.copy(folder / "red.png", folder / "red-again.png")
    shutil.copy(folder / "red.txt", folder / "red-again.txt")
    (folder / "blank.txt").write_text("   ")
    Image.new("RGB", (40, 40), (1, 2, 3)).save(folder / "blank.png")
    rotated = Image.new("RGB", (60, 30), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rotated.save(folder / "sideways.jpg", exif=exif)
    (folder / "sideways.txt").write_text("A red bar.")
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(folder / "print.jpg")
    (folder / "print.txt").write_text("A print-ready red square.")
    Image.new("RGB", (12, 12), (0, 0, 0)).save(folder / "tiny.png")
    (folder / "tiny.txt").write_text("A tiny black square.")
    Image.new("RGB", (800, 40), (0, 0, 200)).save(folder / "strip.png")
    (folder / "strip.txt").write_text("A long blue strip.")
    return folder


def test_validation_names_every_problem_and_blocks_only_what_training_cannot_use(
    tmp_path: Path,
) -> None:
    folder = _messy_dataset(tmp_path / "data")
    inspection = inspect(read_folder(folder), fixes=[])
    kinds = {issue.kind: issue for issue in inspection.issues}
    assert set(kinds) == {
        "unreadable_image",
        "duplicate",
        "empty_text",
        "exif_rotated",
        "colour_mode",
        "too_small",
        "extreme_aspect",
    }
    assert {i.kind for i in inspection.blocking} == {"unreadable_image", "empty_text"}
    assert "repeats row" in kinds["duplicate"].message
    assert "EXIF orientation 6" in kinds["exif_rotated"].message
    assert "CMYK" in kinds["colour_mode"].message
    assert len(inspection.kept) == 10  # nothing dropped without a fix


def test_fixes_drop_bad_rows_and_store_corrected_copies_without_touching_originals(
    tmp_path: Path,
) -> None:
    folder = _messy_dataset(tmp_path / "data")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    inspection = inspect(
        read_folder(folder),
        fixes=[
            "unreadable_image",
            "empty_text",
            "duplicate",
            "exif_rotated",
            "colour_mode",
            "too_small",
            "extreme_aspect",
        ],
    )
    assert inspection.issues == [] and not inspection.blocking
    assert sorted(e.source for e in inspection.kept) == [
        "blue.png",
        "green.png",
        "print.jpg",
        "red-again.png",
        "sideways.jpg",
        "strip.png",
        "tiny.png",
    ]  # of two identical rows the first one (in file order) is kept
    files = write_prepared(inspection, tmp_path / "prepared")
    rows = [
        json.loads(line)
        for name in ("train", "eval")
        for line in files[name].read_text().splitlines()
    ]
    images = {row["source"]: row["turns"][0]["images"][0] for row in rows}
    assert images["blue.png"] == str(folder / "blue.png")  # a clean image is used where it is
    upright = Image.open(images["sideways.jpg"])
    assert upright.size == (30, 60) and upright.mode == "RGB"  # rotated as EXIF said
    assert Image.open(images["print.jpg"]).mode == "RGB"
    assert min(Image.open(images["tiny.png"]).size) >= 28
    width, height = Image.open(images["strip.png"]).size
    assert width / height <= 3.0 + 1e-6 and width == 800  # padded, nothing cut off
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_report_previews_the_split_and_marks_probe_rows(tmp_path: Path) -> None:
    report = to_report(inspect(read_folder(make_colour_dataset(tmp_path / "d", 40)), fixes=[]))
    assert (report.train_rows, report.eval_rows, report.probe_rows) == (24, 16, 8)
    assert {row.split for row in report.rows if row.probe} == {"eval"}
    assert "16 of 40 rows held out" in report.split_reason


@pytest.mark.parametrize(
    ("rows", "held"),
    [(8, 0), (31, 0), (32, 16), (320, 16), (400, 20), (1000, 50), (2560, 128), (10_000, 128)],
)
def test_held_out_is_about_five_percent_at_least_16_at_most_128(rows: int, held: int) -> None:
    assert held_out_size(rows)[0] == held


def test_split_is_deterministic_and_follows_content_not_file_order(tmp_path: Path) -> None:
    source = read_folder(make_colour_dataset(tmp_path / "d", 48))
    first = inspect(source, fixes=[])
    held = {first.kept[i].answer + first.kept[i].images[0] for i in first.eval}
    source.examples.reverse()
    second = inspect(source, fixes=[])
    assert {second.kept[i].answer + second.kept[i].images[0] for i in second.eval} == held
    other_seed = inspect(source, fixes=[], seed=1)
    assert {
        other_seed.kept[i].answer + other_seed.kept[i].images[0] for i in other_seed.eval
    } != held
    tiny = inspect(read_folder(make_colour_dataset(tmp_path / "small", 8)), fixes=[])
    assert tiny.eval == [] and len(tiny.probe) == 8 and "too few" in tiny.split_reason
