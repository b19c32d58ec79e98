"""Find a model's folder (local path or the Hugging Face cache) and check it is safe to load."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelNotFound, ModelUnsafe, Unsupported

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for
    path: Path
    config: dict[str, Any]

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    @property
    def has_safetensors(self) -> bool:
        return any(self.path.glob("*.safetensors"))


def resolve_model(name: str) -> ResolvedModel:
    """A local folder, or a repo id already in the standard Hugging Face cache."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFound(f"{name} is a file; a model is a folder with config.json.")
    elif _looks_like_repo_id(name):
        path = _from_hf_cache(name)
    else:
        raise ModelNotFound(f"Model folder not found: {name}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelNotFound(f"{name} has no config.json, so it is not a model folder.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{name}: config.json cannot be read ({exc}).") from exc
    if not isinstance(config, dict):
        raise ModelNotFound(f"{name}: config.json is not a JSON object.")
    return ResolvedModel(name=name, path=path, config=config)


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def hub_cache_dir() -> Path:
    """The standard Hugging Face cache, read from the environment now (not at import time)."""
    import os

    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(constants.HF_HUB_CACHE)


def _from_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=hub_cache_dir()))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        raise ModelNotFound(
            f"{repo_id} is not in the local Hugging Face cache. Download it first "
            "(Models view) or give the path of a model folder."
        ) from exc


def check_weights(model: ResolvedModel, allow_pickle: bool) -> None:
    """safetensors only, unless the user consented to pickle checkpoints for this model."""
    if model.has_safetensors:
        return
    pickles = [f.name for f in model.path.iterdir() if f.suffix in PICKLE_SUFFIXES]
    if not pickles:
        raise ModelNotFound(f"{model.name} has no weights (no *.safetensors files).")
    if not allow_pickle:
        raise ModelUnsafe(
            f"{model.name} has only pickle weights ({pickles[0]}), which can run code when "
            "loaded. Allow pickle weights for this model only if you trust its source."
        )


def check_remote_code(model: ResolvedModel, trust_remote_code: bool) -> None:
    if "auto_map" in model.config and not trust_remote_code:
        raise ModelUnsafe(
            f"{model.name} needs its own Python code to load (trust_remote_code). "
            "Allow remote code for this model only if you trust its source."
        )


def check_image_text_to_text(model: ResolvedModel, trust_remote_code: bool) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if model.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return
    if trust_remote_code and "auto_map" in model.config:
        return
    raise Unsupported(
        f"{model.name} is a '{model.model_type}' model, which is not an image-text-to-text "
        "model that this version of transformers can run."
    )
