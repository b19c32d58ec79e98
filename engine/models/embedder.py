"""Image and text embeddings from CLIP/SigLIP-style dual encoders (``AutoModel`` + processor).

One embedding model stays resident next to the chat model (they are small); asking for another
replaces it. Vectors are the model's own ``get_image_features`` / ``get_text_features``,
L2-normalised so that a dot product is the cosine similarity.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from engine.documents.images import load_image
from engine.errors import BadInput, ModelNotFound, Unsupported, classify
from engine.models.planner import EMBEDDING_TYPES
from engine.models.resolve import ResolvedModel, check_remote_code, check_weights, resolve_model

log = logging.getLogger(__name__)

BATCH = 16
# How each family's text encoder expects its input: SigLIP was trained on texts padded to a
# fixed length and pools at the end, so it needs "max_length"; CLIP pools at the EOS token.
TEXT_PADDING: dict[str, str] = {"siglip": "max_length", "siglip2": "max_length"}


@dataclass(frozen=True)
class EmbedSpec:
    model: str
    quant: str = "none"
    device: str = "auto"
    allow_pickle: bool = False
    trust_remote_code: bool = False


class Embedder:
    """A dual encoder resident in this process."""

    def __init__(self, resolved: ResolvedModel, model: Any, processor: Any, device: str) -> None:
        self.resolved = resolved
        self.model = model
        self.processor = processor
        self.device = device

    @classmethod
    def load(cls, spec: EmbedSpec) -> Embedder:
        from engine.backends.local_hf import quantization_config
        from engine.devices import resolve_device

        resolved = resolve_model(spec.model)
        check_remote_code(resolved, spec.trust_remote_code)
        check_weights(resolved, spec.allow_pickle)
        if resolved.model_type not in EMBEDDING_TYPES and not spec.trust_remote_code:
            raise Unsupported(
                f"{resolved.name} is a '{resolved.model_type}' model, not an image-text "
                "embedding model such as CLIP or SigLIP."
            )
        device = resolve_device(spec.device)
        import torch
        from transformers import AutoModel, AutoProcessor

        dtype = torch.float32 if device == "cpu" else torch.float16
        quant = quantization_config(spec.quant, dtype) if spec.quant != "auto" else None
        try:
            processor = AutoProcessor.from_pretrained(
                resolved.path, trust_remote_code=spec.trust_remote_code
            )
            model = AutoModel.from_pretrained(
                resolved.path,
                dtype=dtype,
                quantization_config=quant,
                device_map={"": 0} if device == "cuda" else {"": device},
                use_safetensors=resolved.has_safetensors or not spec.allow_pickle,
                trust_remote_code=spec.trust_remote_code,
            )
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
            error = classify(exc)
            if error.code == "out_of_memory":
                raise error from exc
            raise ModelNotFound(f"Could not load {resolved.name}: {exc}") from exc
        model.eval()
        return cls(resolved, model, processor, device)

    def embed_images(
        self, paths: list[str], cancelled: Callable[[], bool] = lambda: False
    ) -> list[list[float]] | None:
        """One vector per image, in order; None if cancelled between batches."""
        vectors: list[list[float]] = []
        for start in range(0, len(paths), BATCH):
            if cancelled():
                return None
            images = [load_image(path) for path in paths[start : start + BATCH]]
            inputs = self.processor(images=images, return_tensors="pt")
            pixels = inputs["pixel_values"].to(self.model.device, dtype=self.model.dtype)
            vectors.extend(self._features(self.model.get_image_features, pixel_values=pixels))
        return vectors

    def embed_texts(
        self, texts: list[str], cancelled: Callable[[], bool] = lambda: False
    ) -> list[list[float]] | None:
        if any(not text.strip() for text in texts):
            raise BadInput("A text to embed is empty.")
        padding = TEXT_PADDING.get(self.resolved.model_type, "longest")
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            if cancelled():
                return None
            inputs = self.processor(
                text=texts[start : start + BATCH],
                padding=padding,
                truncation=True,
                return_tensors="pt",
            ).to(self.model.device)
            vectors.extend(self._features(self.model.get_text_features, **inputs))
        return vectors

    def _features(self, method: Callable[..., Any], **inputs: Any) -> list[list[float]]:
        import torch

        with torch.inference_mode():
            output = method(**inputs)
        features = getattr(output, "pooler_output", output)  # transformers 5 returns an output
        features = features.float()
        features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return [row.tolist() for row in features.cpu()]

    @property
    def dimension(self) -> int:
        config = self.model.config
        return int(
            getattr(config, "projection_dim", 0)
            or getattr(getattr(config, "text_config", None), "projection_size", 0)
            or getattr(getattr(config, "vision_config", None), "hidden_size", 0)
        )

    def close(self) -> None:
        self.model = None
        self.processor = None


_lock = threading.Condition()
_resident: dict[EmbedSpec, Embedder] = {}
_leases: dict[EmbedSpec, int] = {}  # jobs using each resident embedder right now


def _serves(resident: EmbedSpec, spec: EmbedSpec) -> bool:
    """A resident embedder serves a request for the same model, quantisation and device; the
    consent it was loaded with (pickle, remote code) covers a request that needs less."""
    return (
        (resident.model, resident.quant, resident.device) == (spec.model, spec.quant, spec.device)
        and resident.allow_pickle >= spec.allow_pickle
        and resident.trust_remote_code >= spec.trust_remote_code
    )


def _acquire(spec: EmbedSpec) -> EmbedSpec:
    """Under the lock: wait until no job uses another model, load ``spec`` if needed, and
    return the key of the resident embedder that serves it."""
    _lock.wait_for(lambda: all(_serves(busy, spec) for busy in _leases))
    for resident in _resident:
        if _serves(resident, spec):
            return resident
    for other in list(_resident):
        _resident.pop(other).close()
    _resident[spec] = Embedder.load(spec)
    return spec


@contextmanager
def lease_embedder(spec: EmbedSpec) -> Iterator[Embedder]:
    """The resident embedder for ``spec`` while the block runs.

    Jobs that use the same model share it, so a search can run beside an index run; a job that
    needs another model waits until none uses the resident one, and only then replaces it."""
    with _lock:
        key = _acquire(spec)
        _leases[key] = _leases.get(key, 0) + 1
        embedder = _resident[key]
    try:
        yield embedder
    finally:
        with _lock:
            _leases[key] -= 1
            if not _leases[key]:
                del _leases[key]
            _lock.notify_all()


def get_embedder(spec: EmbedSpec) -> Embedder:
    """The resident embedder for ``spec``, loading it (and dropping another) when needed; for
    one-shot jobs on the model lane (a long user holds ``lease_embedder`` instead)."""
    with _lock:
        return _resident[_acquire(spec)]


def unload_embedder() -> bool:
    """Drop the resident embedder, unless a job (an index run) is using it."""
    with _lock:
        had = bool(_resident)
        for other in list(_resident):
            if other not in _leases:
                _resident.pop(other).close()
        return had
