"""Tiny random-weight vision-language models built offline, for tests and the demo (no torch at import)."""

from __future__ import annotations

from .tiny import (
    AUTO_CLASS,
    DEMO_FILE,
    FAMILIES,
    NF4_ON_CPU,
    PROMPT_FORMAT,
    REQUIRES,
    build_tiny_model,
    cache_root,
    tiny_model_path,
)

__all__ = [
    "AUTO_CLASS",
    "DEMO_FILE",
    "FAMILIES",
    "NF4_ON_CPU",
    "PROMPT_FORMAT",
    "REQUIRES",
    "build_tiny_model",
    "cache_root",
    "tiny_model_path",
]
