"""Read a dataset folder: sidecar ``.txt`` captions, ``metadata.jsonl`` or a CSV, as examples.

Three layouts, tried in this order:

* ``metadata.jsonl``: one JSON object per line with ``image`` (or ``file_name``/``images``) and
  ``caption``/``text``, or ``question`` + ``answer``, or OpenAI/transformers-style ``messages``;
* a CSV (``metadata.csv`` or the only ``*.csv``; comma, tab or semicolon separated, header row)
  with the same columns;
* images with a sidecar ``<name>.txt`` caption next to them.

Nothing here decodes images; ``engine.finetune.validate`` checks them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.documents.images import IMAGE_SUFFIXES
from engine.errors import BadInput

IMAGE_KEYS = ("image", "file_name", "filename", "image_path", "path", "file")
TEXT_KEYS = ("caption", "text", "description", "label")
QUESTION_KEYS = ("question", "prompt", "query", "instruction")
ANSWER_KEYS = ("answer", "response", "output", "completion")
ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
}


@dataclass
class Turn:
    role: str  # system | user | assistant
    text: str
    images: list[str] = field(default_factory=list)  # absolute paths, shown before the text


@dataclass
class Example:
    turns: list[Turn]
    source: str  # where it came from, for messages ("metadata.jsonl line 4")
    kind: str  # caption | qa | messages

    @property
    def images(self) -> list[str]:
        return [path for turn in self.turns for path in turn.images]

    @property
    def prompt(self) -> str:
        return next((turn.text for turn in self.turns if turn.role == "user"), "")

    @property
    def answer(self) -> str:
        return next((t.text for t in reversed(self.turns) if t.role == "assistant"), "")

    def text_key(self) -> str:
        """The texts of the example, for duplicate detection and the split hash."""
        return "\x1e".join(f"{turn.role}\x1f{turn.text}" for turn in self.turns)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "turns": [{"role": t.role, "text": t.text, "images": t.images} for t in self.turns],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Example:
        turns = [Turn(t["role"], t["text"], list(t.get("images", []))) for t in data["turns"]]
        return cls(turns=turns, source=str(data.get("source", "")), kind=str(data["kind"]))


@dataclass
class ParseProblem:
    source: str
    message: str


@dataclass
class ImportResult:
    folder: Path
    format: str
    examples: list[Example]
    problems: list[ParseProblem]

    @property
    def kind(self) -> str:
        kinds = {example.kind for example in self.examples}
        return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "caption")


def read_folder(folder: str | Path, caption_prompt: str = "Describe this image.") -> ImportResult:
    """The examples of a dataset folder, and the rows that could not be read (with reasons)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise BadInput(f"Dataset folder not found: {root}")
    root = root.resolve()
    if (root / "metadata.jsonl").is_file():
        return _read_jsonl(root, root / "metadata.jsonl", caption_prompt)
    csv_file = _find_csv(root)
    if csv_file is not None:
        return _read_csv(root, csv_file, caption_prompt)
    result = _read_sidecars(root, caption_prompt)
    if not result.examples and not result.problems:
        raise BadInput(
            f"{root} holds no training data: put images with a .txt caption of the same name "
            "next to them, or a metadata.jsonl or a CSV file listing images and texts."
        )
    return result


def content_key(example: Example, image_hashes: dict[str, str]) -> str:
    """A stable identity for an example: its image contents and texts (not file names)."""
    digest = hashlib.sha256(example.text_key().encode("utf-8"))
    for path in example.images:
        digest.update(image_hashes.get(path, path).encode())
    return digest.hexdigest()


# --- metadata.jsonl -------------------------------------------------------------------------------


def _read_jsonl(root: Path, file: Path, caption_prompt: str) -> ImportResult:
    examples: list[Example] = []
    problems: list[ParseProblem] = []
    with file.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{file.name} line {number}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                examples.append(_from_row(root, row, source, caption_prompt))
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(ParseProblem(source, f"{source}: {exc}"))
    return ImportResult(root, "metadata_jsonl", examples, problems)


def _from_row(root: Path, row: dict[str, Any], source: str, caption_prompt: str) -> Example:
    images = _row_images(root, row)
    if "messages" in row or "conversations" in row:
        return Example(
            _messages(root, row.get("messages") or row["conversations"], images), source, "messages"
        )
    question = _first(row, QUESTION_KEYS)
    answer = _first(row, ANSWER_KEYS)
    if question is not None and (answer is not None or any(k in row for k in ANSWER_KEYS)):
        turns = [Turn("user", str(question), images), Turn("assistant", str(answer or ""))]
        return Example(turns, source, "qa")
    caption = _first(row, TEXT_KEYS)
    if caption is None and answer is not None:
        caption = answer
    if caption is None and any(key in row for key in TEXT_KEYS):
        caption = ""  # an empty caption is a fixable problem, not an unreadable row
    if caption is None:
        raise ValueError(
            "no text: expected 'caption' (or 'text'), 'question' + 'answer', or 'messages'"
        )
    return Example(
        [Turn("user", caption_prompt, images), Turn("assistant", str(caption))], source, "caption"
    )


def _row_images(root: Path, row: dict[str, Any]) -> list[str]:
    if isinstance(row.get("images"), list):
        return [_resolve(root, str(item)) for item in row["images"]]
    value = _first(row, IMAGE_KEYS)
    if value is None:
        if "messages" in row or "conversations" in row:
            return []  # images may sit inside the message parts
        raise ValueError("no image: expected an 'image' (or 'file_name') field")
    return [_resolve(root, str(value))]


def _messages(root: Path, messages: Any, images: list[str]) -> list[Turn]:
    """OpenAI/transformers chat messages; bare image parts take the row's images in order."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    pending = list(images)
    turns: list[Turn] = []
    for message in messages:
        role = ROLES.get(str(message.get("role") or message.get("from", "")).lower())
        if role is None:
            raise ValueError(f"unknown role {message.get('role')!r}")
        content = message.get("content", message.get("value", ""))
        texts: list[str] = []
        turn_images: list[str] = []
        if isinstance(content, str):
            count = content.count("<image>")  # sharegpt style: placeholders in the text
            turn_images.extend(pending[:count])
            del pending[:count]
            texts.append(content.replace("<image>", "").strip())
        else:
            for part in content:
                kind = part.get("type")
                if kind in ("image", "image_url"):
                    path = part.get("image") or part.get("path") or part.get("url")
                    if isinstance(path, dict):
                        path = path.get("url")
                    if path:
                        turn_images.append(_resolve(root, str(path)))
                    elif pending:
                        turn_images.append(pending.pop(0))
                    else:
                        raise ValueError("an image part names no image and the row lists none")
                elif kind == "text":
                    texts.append(str(part.get("text", "")))
        if role != "user" and turn_images:
            raise ValueError(f"images are only supported in user turns, not in {role} turns")
        turns.append(Turn(role, "\n".join(t for t in texts if t), turn_images))
    if pending:  # images listed but never placed: they belong to the first user turn
        first_user = next((t for t in turns if t.role == "user"), None)
        if first_user is None:
            raise ValueError("the row has images but no user turn")
        first_user.images[:0] = pending
    if not any(turn.role == "assistant" for turn in turns):
        raise ValueError("the conversation has no assistant turn to learn from")
    return turns


# --- CSV ------------------------------------------------------------------------------------------


def _find_csv(root: Path) -> Path | None:
    if (root / "metadata.csv").is_file():
        return root / "metadata.csv"
    found = sorted(root.glob("*.csv")) + sorted(root.glob("*.tsv"))
    return found[0] if len(found) == 1 else None


def _read_csv(root: Path, file: Path, caption_prompt: str) -> ImportResult:
    text = file.read_text(encoding="utf-8-sig")
    try:
        # open_clip's CSVs are tab-separated by default; sniff instead of assuming commas.
        dialect: Any = csv.Sniffer().sniff(text[:8192], delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel_tab if file.suffix == ".tsv" else csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    columns = {name.strip().lower() for name in reader.fieldnames or []}
    if not columns & set(IMAGE_KEYS):
        raise BadInput(
            f"{file.name} has no image column: name one of {', '.join(IMAGE_KEYS[:2])} "
            f"(found: {', '.join(sorted(columns)) or 'no header'})."
        )
    examples: list[Example] = []
    problems: list[ParseProblem] = []
    for number, raw in enumerate(reader, start=2):
        row = {(key or "").strip().lower(): (value or "") for key, value in raw.items()}
        source = f"{file.name} row {number}"
        try:
            examples.append(_from_row(root, row, source, caption_prompt))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(ParseProblem(source, f"{source}: {exc}"))
    return ImportResult(root, "csv", examples, problems)


# --- sidecar .txt ---------------------------------------------------------------------------------


def _read_sidecars(root: Path, caption_prompt: str) -> ImportResult:
    examples: list[Example] = []
    problems: list[ParseProblem] = []
    images = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    captioned: set[Path] = set()
    for image in images:
        sidecar = image.with_suffix(".txt")
        source = str(image.relative_to(root))
        if not sidecar.is_file():
            problems.append(ParseProblem(source, f"{source} has no caption file ({sidecar.name})"))
            continue
        captioned.add(sidecar)
        try:
            caption = sidecar.read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(ParseProblem(source, f"{sidecar.name} cannot be read: {exc}"))
            continue
        turns = [Turn("user", caption_prompt, [str(image)]), Turn("assistant", caption)]
        examples.append(Example(turns, source, "caption"))
    for orphan in sorted(set(root.rglob("*.txt")) - captioned):
        source = str(orphan.relative_to(root))
        if not any(orphan.with_suffix(s).exists() for s in IMAGE_SUFFIXES):
            problems.append(ParseProblem(source, f"{source} is a caption without an image"))
    return ImportResult(root, "sidecar_txt", examples, problems)


# --- helpers --------------------------------------------------------------------------------------


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = row.get(key)
        if value is not None and value != "":
            return value
    return None


def _resolve(root: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (root / path))
