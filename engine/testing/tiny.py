"""Build tiny random-weight vision-language models offline, and cache them across processes."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pathlib
import shutil
import tempfile
import threading
import uuid
from importlib import metadata
from typing import Any

# family -> "module:function" in this package; imported only when that family is built.
_BUILDERS: dict[str, str] = {
    "llava": "families_llava:build_llava",
    "qwen2_vl": "families_qwen:build_qwen2_vl",
    "qwen2_5_vl": "families_qwen:build_qwen2_5_vl",
    "llava_next": "families_llava:build_llava_next",
    "llava_onevision": "families_llava:build_llava_onevision",
    "idefics3": "families_idefics:build_idefics3",
    "smolvlm": "families_idefics:build_smolvlm",
    "idefics2": "families_idefics:build_idefics2",
    "paligemma": "families_other:build_paligemma",
    "mllama": "families_other:build_mllama",
    "blip2": "families_other:build_blip2",
    "instructblip": "families_other:build_instructblip",
    "internvl": "families_other:build_internvl",
    "idefics": "families_idefics:build_idefics",
    "clip": "families_embed:build_clip",
    "siglip": "families_embed:build_siglip",
}

FAMILIES: tuple[str, ...] = tuple(_BUILDERS)

# Whether the family loads in bitsandbytes NF4 on the CPU. Every tiny model keeps each quantised
# Linear's in/out features at multiples of 64 (bnb's CPU NF4 block size), so all of them do.
# Caveat: transformers keeps BLIP-2's Q-Former in float32 (its `_keep_in_fp32_modules`), and
# SigLIP's pooling head (an nn.MultiheadAttention) is never quantised; the rest is NF4.
NF4_ON_CPU: dict[str, bool] = {family: True for family in FAMILIES}

# How the engine should build a prompt for one image + a question:
#   "chat_template": processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
#   "prefix": PaliGemma; pass the task text ("caption en", "answer en <question>") as `text`, the
#             processor puts one <image> per image and BOS in front and ends it with a newline
#   "plain": BLIP-2 / InstructBLIP / IDEFICS; pass bare text (e.g. "Question: ... Answer:"), the
#            processor inserts the image tokens itself
#   "embedding": CLIP / SigLIP; no generation, processor(text=[...], images=[...]) -> similarities
PROMPT_FORMAT: dict[str, str] = {family: "chat_template" for family in FAMILIES} | {
    "paligemma": "prefix",
    "blip2": "plain",
    "instructblip": "plain",
    "idefics": "plain",
    "clip": "embedding",
    "siglip": "embedding",
}

# The transformers Auto class that loads the family: generation models vs. embedding models.
AUTO_CLASS: dict[str, str] = {family: "AutoModelForImageTextToText" for family in FAMILIES} | {
    "clip": "AutoModel",
    "siglip": "AutoModel",
}

# Extra Python modules a family's real processor class needs (beyond the project's dependencies).
REQUIRES: dict[str, tuple[str, ...]] = {family: () for family in FAMILIES} | {
    "smolvlm": ("num2words",),
}

DEMO_FILE = "visiondesk_demo.json"
_COMPLETE_MARKER = ".visiondesk-complete"

_build_lock = threading.Lock()


def _builder(family: str) -> Any:
    try:
        target = _BUILDERS[family]
    except KeyError:
        raise ValueError(
            f"unknown tiny family {family!r}; choose from {', '.join(FAMILIES)}"
        ) from None
    module_name, func_name = target.split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, func_name)


def build_tiny_model(family: str, out_dir: str | os.PathLike[str], seed: int = 0) -> pathlib.Path:
    """Write a tiny random model + processor of `family` to `out_dir`; deterministic for `seed`."""
    import torch

    builder = _builder(family)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # fork_rng: seeding must not disturb the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = builder()
    model.eval()
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None and hasattr(model, "generation_config"):
        _set_generation_ids(model, tokenizer)
    _save_quietly(model, processor, out)
    demo = {"family": family, "demo": True, "note": "random weights: answers are random text"}
    (out / DEMO_FILE).write_text(json.dumps(demo, indent=2) + "\n", encoding="utf-8")
    return out


def _save_quietly(model: Any, processor: Any, out: pathlib.Path) -> None:
    # A one-shard model needs no "Writing model shards" bar on the engine's stderr.
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _set_generation_ids(model: Any, tokenizer: Any) -> None:
    # generate() warns (and may fail) without pad/eos ids; take them from the real tokenizer.
    gen = model.generation_config
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            setattr(gen, attr, value)


def cache_root() -> pathlib.Path:
    """The shared cache folder: $VISIONDESK_TINY_CACHE, else a per-user folder in the temp dir."""
    env = os.environ.get("VISIONDESK_TINY_CACHE")
    if env:
        return pathlib.Path(env)
    user = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return pathlib.Path(tempfile.gettempdir()) / f"visiondesk-tiny-{user}"


def _cache_key() -> str:
    """Hash of this package's sources and the library versions the folders depend on.

    Editing a builder, or upgrading transformers, must not reuse a folder built before.
    """
    digest = hashlib.sha256()
    for source in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    for dist in ("transformers", "tokenizers", "torch"):
        try:
            digest.update(metadata.version(dist).encode())
        except metadata.PackageNotFoundError:
            digest.update(b"none")
    return digest.hexdigest()[:12]


def tiny_model_path(family: str) -> pathlib.Path:
    """Build `family` once (seed 0) into the shared cache and return its folder.

    The marker file makes a finished build visible to every process that shares the cache
    (e.g. the engine subprocess started by a test), so only the first one pays for the build.
    """
    _builder(family)  # validate the name before touching the disk
    final = cache_root() / f"{family}-{_cache_key()}"
    with _build_lock:  # threads of one process build a family once
        if not (final / _COMPLETE_MARKER).exists():
            _build_into_cache(family, final)
    return final


def _build_into_cache(family: str, final: pathlib.Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # A folder without the marker is debris from an interrupted manual copy: rebuild it.
        shutil.rmtree(final, ignore_errors=True)
    # Build in a private sibling, then rename: readers in other processes never see half a model.
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build_tiny_model(family, tmp)
        (tmp / _COMPLETE_MARKER).write_text(_cache_key() + "\n", encoding="utf-8")
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process renamed its build first; theirs is complete, use it.
            if not (final / _COMPLETE_MARKER).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
