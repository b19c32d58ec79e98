"""The resolved training configuration: every value fixed, written to ``run.json``, fingerprinted.

The engine resolves a person's ``FinetuneSettings`` into one ``TrainConfig`` (see ``recipes``);
the trainer process reads nothing else. Its fingerprint (settings that change the result, plus
a hash of the prepared data and image contents) is stored in every checkpoint, so a resume never
continues a run with different data or settings by accident.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
# Fields that do not change what is computed (where files live, how often to report).
_NOT_FINGERPRINTED = frozenset({"run_dir", "data_dir", "trial_step", "model_name", "data_hash"})


@dataclass
class TrainConfig:
    run_dir: str
    model_path: str
    model_name: str
    model_type: str
    kind: str  # causal | contrastive
    recipe: str
    quant: str  # nf4 | none
    device: str  # cuda | cpu | mps
    dtype: str  # bfloat16 | float16 | float32 (the base's compute dtype)
    rank: int
    alpha: int
    dropout: float
    learning_rate: float
    vision_learning_rate: float
    weight_decay: float
    max_grad_norm: float
    warmup_ratio: float
    optimizer: str  # adamw_8bit | adamw
    gradient_checkpointing: bool
    batch_size: int
    grad_accum: int
    epochs: int
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    checkpoint_every: int
    early_stopping_patience: int
    max_length: int
    seed: int
    data_dir: str
    data_hash: str
    target_regex: str = ""
    modules_to_save: list[str] = field(default_factory=list)
    skip_modules: list[str] = field(default_factory=list)
    vision_prefixes: list[str] = field(default_factory=list)
    image_max_pixels: int | None = None
    trial_step: bool = True
    allow_pickle: bool = False
    trust_remote_code: bool = False

    # --- files ---------------------------------------------------------------------------------
    @property
    def run(self) -> Path:
        return Path(self.run_dir)

    def data_file(self, split: str) -> Path:
        return Path(self.data_dir) / f"{split}.jsonl"

    def save(self) -> Path:
        path = self.run / RUN_FILE
        tmp = path.with_name(f".{RUN_FILE}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainConfig:
        data = json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{key: value for key, value in data.items() if key in known})
        config.run_dir = str(Path(run_dir).resolve())  # the folder may have been moved
        return config

    # --- identity ------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        settings = {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if key not in _NOT_FINGERPRINTED
        }
        settings["model_path"] = Path(self.model_path).name  # the same model in another folder
        blob = json.dumps(settings, sort_keys=True) + "\0" + self.data_hash
        return hashlib.sha256(blob.encode()).hexdigest()


def data_hash(data_dir: Path) -> str:
    """Hash of the prepared rows and of every image's bytes, in row order."""
    digest = hashlib.sha256()
    for split in ("train", "eval", "probe"):
        file = data_dir / f"{split}.jsonl"
        text = file.read_text(encoding="utf-8") if file.is_file() else ""
        digest.update(split.encode() + b"\0" + text.encode())
        for line in text.splitlines():
            for turn in json.loads(line)["turns"] if line.strip() else []:
                for image in turn.get("images", []):
                    digest.update(_file_hash(Path(image)).encode())
    return digest.hexdigest()


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
