"""Check a dataset's rows and images, apply one-click fixes, and split off held-out and probe rows.

The person's files are never changed: a fix either drops a row or stores a corrected copy of an
image (upright, RGB, resized or padded) in the run's own ``data/images`` folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.finetune.data import Example, ImportResult, content_key
from engine.protocol import finetune as pf

MIN_SIDE = 28  # Qwen-style processors refuse smaller images (one 28-px merged patch)
MAX_SIDE = 4096  # larger images are scaled down to FIX_MAX_SIDE: slow to decode, huge token counts
FIX_MAX_SIDE = 2048
MAX_ASPECT = 6.0  # longer/shorter side; above it a centre crop or a resize loses most of the image
FIX_ASPECT = 3.0
ODD_MODES = frozenset(
    {
        "CMYK",
        "YCbCr",
        "LAB",
        "HSV",
        "I",
        "I;16",
        "I;16B",
        "I;16L",
        "F",
        "RGBA",
        "LA",
        "P",
        "PA",
        "1",
        "RGBX",
        "RGBa",
        "La",
    }
)
DROP_FIXES = frozenset({"missing_image", "unreadable_image", "empty_text", "duplicate"})
COPY_FIXES = frozenset({"exif_rotated", "colour_mode", "too_small", "too_large", "extreme_aspect"})
PROBE_ROWS = 8


@dataclass
class ImageFacts:
    path: str
    error: str = ""  # "" when readable
    missing: bool = False
    width: int = 0
    height: int = 0
    mode: str = ""
    orientation: int = 1
    sha256: str = ""

    def problems(self) -> list[str]:
        if self.missing:
            return ["missing_image"]
        if self.error:
            return ["unreadable_image"]
        found = []
        if self.orientation not in (0, 1):
            found.append("exif_rotated")
        if self.mode in ODD_MODES:
            found.append("colour_mode")
        short, long = sorted((self.width, self.height))
        if short < MIN_SIDE:
            found.append("too_small")
        if long > MAX_SIDE:
            found.append("too_large")
        if short and long / short > MAX_ASPECT:
            found.append("extreme_aspect")
        return found


@dataclass
class Inspection:
    """The outcome of checking (and possibly fixing) an import."""

    source: ImportResult
    facts: dict[str, ImageFacts]
    kept: list[Example]  # after the chosen drop fixes
    issues: list[pf.DatasetIssue]  # problems still present (by index into ``kept``)
    fixes_applied: list[str]
    train: list[int] = field(default_factory=list)
    eval: list[int] = field(default_factory=list)
    probe: list[int] = field(default_factory=list)
    split_reason: str = ""
    fixed: dict[str, int] = field(default_factory=dict)  # problems fixed, by kind

    @property
    def blocking(self) -> list[pf.DatasetIssue]:
        return [issue for issue in self.issues if issue.blocking]


def inspect_image(path: str) -> ImageFacts:
    """Size, mode, EXIF orientation and content hash; full decode to catch truncated files."""
    from PIL import Image, UnidentifiedImageError

    from engine.documents.images import MAX_IMAGE_PIXELS

    file = Path(path)
    if not file.is_file():
        return ImageFacts(path, missing=True, error="not found")
    try:
        data = file.read_bytes()
    except OSError as exc:
        return ImageFacts(path, error=f"cannot be read ({exc})")
    facts = ImageFacts(path, sha256=hashlib.sha256(data).hexdigest())
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(file) as image:
            facts.width, facts.height = image.size
            facts.mode = image.mode
            facts.orientation = int(image.getexif().get(0x0112, 1) or 1)
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        facts.error = f"damaged or not an image ({exc})"
    except Image.DecompressionBombError:
        facts.error = "claims too many pixels (a decompression bomb)"
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return facts


def inspect(source: ImportResult, fixes: list[str] | set[str], seed: int = 0) -> Inspection:
    """Check every row and image; drop the rows the chosen fixes drop; split the rest."""
    chosen = set(fixes)
    facts: dict[str, ImageFacts] = {}
    for example in source.examples:
        for path in example.images:
            if path not in facts:
                facts[path] = inspect_image(path)
    hashes = {path: fact.sha256 for path, fact in facts.items() if fact.sha256}
    issues: list[tuple[int, pf.DatasetIssue]] = []
    seen: dict[str, int] = {}
    drop: set[int] = set()
    for index, example in enumerate(source.examples):
        found = _row_issues(index, example, facts, hashes, seen)
        for issue in found:
            if issue.kind in chosen and issue.kind in DROP_FIXES:
                drop.add(index)
        issues.extend((index, issue) for issue in found)
    kept_index = {
        old: new for new, old in enumerate(i for i in range(len(source.examples)) if i not in drop)
    }
    kept = [source.examples[old] for old in kept_index]
    remaining: list[pf.DatasetIssue] = [
        pf.DatasetIssue(kind="parse_error", message=problem.message, path=problem.source)
        for problem in source.problems
    ]
    for old, issue in issues:
        if old in drop or issue.kind in chosen & COPY_FIXES:
            continue
        issue.row = kept_index[old]
        remaining.append(issue)
    applied = sorted(chosen & {issue.kind for _, issue in issues})  # fixes that changed something
    inspection = Inspection(source, facts, kept, remaining, applied)
    for _, issue in issues:
        if issue.kind in applied:
            inspection.fixed[issue.kind] = inspection.fixed.get(issue.kind, 0) + 1
    _split(inspection, hashes, seed)
    return inspection


def _row_issues(
    index: int,
    example: Example,
    facts: dict[str, ImageFacts],
    hashes: dict[str, str],
    seen: dict[str, int],
) -> list[pf.DatasetIssue]:
    found: list[pf.DatasetIssue] = []
    where = example.source
    for path in example.images:
        for kind in facts[path].problems():
            found.append(
                pf.DatasetIssue(
                    kind=kind,
                    message=_describe(kind, facts[path], where),
                    row=index,
                    path=path,
                    blocking=kind in pf.BLOCKING_ISSUES,
                )
            )
    if any(turn.role == "assistant" and not turn.text.strip() for turn in example.turns):
        found.append(
            pf.DatasetIssue(
                kind="empty_text",
                message=f"{where}: the answer is empty, so there is nothing to learn",
                row=index,
                blocking=True,
            )
        )
    key = content_key(example, hashes)
    if key in seen:
        found.append(
            pf.DatasetIssue(
                kind="duplicate",
                message=f"{where} repeats row {seen[key] + 1} (same image and text)",
                row=index,
            )
        )
    else:
        seen[key] = index
    return found


def _describe(kind: str, facts: ImageFacts, where: str) -> str:
    name = Path(facts.path).name
    size = f"{facts.width}×{facts.height}"
    return {
        "missing_image": f"{where}: image {name} does not exist",
        "unreadable_image": f"{where}: {name} is {facts.error}",
        "exif_rotated": f"{name} is stored sideways (EXIF orientation {facts.orientation})",
        "colour_mode": f"{name} is in colour mode {facts.mode}, not RGB",
        "too_small": f"{name} is only {size} pixels (at least {MIN_SIDE} needed)",
        "too_large": f"{name} is {size} pixels; it will be scaled to {FIX_MAX_SIDE} px",
        "extreme_aspect": f"{name} is {size}: a very long strip, most of it would be cut off",
    }.get(kind, f"{where}: {kind}")


# --- held-out split -------------------------------------------------------------------------------


def held_out_size(rows: int) -> tuple[int, str]:
    """About 5 %, at least 16 and at most 128 rows; none below 32 rows."""
    if rows < 32:
        return 0, (
            f"{rows} rows are too few to hold any out (32 needed): the evaluation uses the "
            "training rows, so it shows memorisation rather than generalisation"
        )
    count = max(16, min(128, round(rows * 0.05)))
    return count, f"{count} of {rows} rows held out (about 5 %, at least 16, at most 128)"


def _split(inspection: Inspection, hashes: dict[str, str], seed: int) -> None:
    # Ordered by a hash of content and seed: adding rows or renaming files keeps the split stable.
    order = sorted(
        range(len(inspection.kept)),
        key=lambda i: (
            hashlib.sha256(
                f"{seed}:{content_key(inspection.kept[i], hashes)}".encode()
            ).hexdigest(),
            i,
        ),
    )
    count, reason = held_out_size(len(order))
    inspection.eval = sorted(order[:count])
    inspection.train = sorted(order[count:])
    pool = order[:count] if count else order
    inspection.probe = sorted(pool[:PROBE_ROWS])
    inspection.split_reason = reason


def to_report(inspection: Inspection) -> pf.DatasetReport:
    held = set(inspection.eval)
    probe = set(inspection.probe)
    rows = [
        pf.DatasetRow(
            index=index,
            images=example.images,
            prompt=example.prompt,
            answer=example.answer,
            turns=len(example.turns),
            source=example.source,
            split="eval" if index in held else "train",
            probe=index in probe,
        )
        for index, example in enumerate(inspection.kept)
    ]
    return pf.DatasetReport(
        folder=str(inspection.source.folder),
        format=inspection.source.format,
        kind=inspection.source.kind,
        rows=rows,
        issues=inspection.issues,
        train_rows=len(inspection.train),
        eval_rows=len(inspection.eval),
        probe_rows=len(inspection.probe),
        split_reason=inspection.split_reason,
        fixes_applied=inspection.fixes_applied,
    )


# --- writing the prepared dataset -----------------------------------------------------------------


def write_prepared(inspection: Inspection, out: Path) -> dict[str, Path]:
    """Write train/eval/probe JSONL (and corrected image copies) under ``out``; returns the files."""
    images_dir = out / "images"
    copies: dict[str, str] = {}
    for path, facts in inspection.facts.items():
        if set(facts.problems()) & set(inspection.fixes_applied) & COPY_FIXES:
            copies[path] = _store_fixed_copy(facts, images_dir)
    files = {}
    for name, indices in (
        ("train", inspection.train),
        ("eval", inspection.eval),
        ("probe", inspection.probe),
    ):
        files[name] = out / f"{name}.jsonl"
        lines = []
        for index in indices:
            data = inspection.kept[index].to_json()
            for turn in data["turns"]:
                turn["images"] = [copies.get(p, p) for p in turn["images"]]
            lines.append(json.dumps(data, ensure_ascii=False))
        _atomic_write(files[name], "".join(line + "\n" for line in lines))
    _atomic_write(out / "report.json", json.dumps(_report_json(inspection), ensure_ascii=False))
    return files


def read_examples(file: Path) -> list[Example]:
    if not file.is_file():
        return []
    lines = file.read_text(encoding="utf-8").splitlines()
    return [Example.from_json(json.loads(line)) for line in lines if line.strip()]


def _report_json(inspection: Inspection) -> Any:
    import msgspec

    return msgspec.to_builtins(to_report(inspection))


def _store_fixed_copy(facts: ImageFacts, images_dir: Path) -> str:
    """An upright RGB copy within the size and aspect limits, named by its source's hash."""
    from PIL import Image

    from engine.documents.images import load_image, pad_to_aspect

    images_dir.mkdir(parents=True, exist_ok=True)
    target = images_dir / f"{facts.sha256[:20]}.png"
    if target.is_file():
        return str(target)
    image = load_image(facts.path)  # applies EXIF orientation, flattens to RGB
    width, height = image.size
    if max(width, height) > FIX_MAX_SIDE:
        scale = FIX_MAX_SIDE / max(width, height)
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        scale = MIN_SIDE / min(width, height)
        image = image.resize(
            (round(width * scale), round(height * scale)), Image.Resampling.BICUBIC
        )
    if max(image.size) / min(image.size) > MAX_ASPECT:
        # Padded rather than cropped: nothing the label refers to is lost.
        image = pad_to_aspect(image, FIX_ASPECT)
    tmp = target.with_suffix(".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, target)
    return str(target)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
