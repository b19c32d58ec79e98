"""The embedding model as the search index uses it: batches of preprocessed pixels in, vectors out.

Loading and text embedding reuse ``engine.models.embedder`` (one resident dual encoder shared
with the ``Embed`` command); what is added here is embedding pixels that the decode processes
already preprocessed, as numpy arrays, and the model's logit scale for zero-shot tags.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from engine.models.embedder import Embedder, EmbedSpec, get_embedder, lease_embedder


def model_key(name: str) -> str:
    """How a model is named in the index: a folder by its absolute path, a repo id as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


class Encoder:
    def __init__(self, embedder: Embedder, name: str) -> None:
        self.embedder = embedder
        self.name = name

    @classmethod
    def load(cls, model: str, **options: Any) -> Encoder:
        """A one-off encoder (tests, benchmarks); ``options`` are ``EmbedSpec``'s fields."""
        spec = EmbedSpec(model_key(model), **options)
        return cls(get_embedder(spec), spec.model)

    @classmethod
    @contextmanager
    def lease(cls, model: str, **options: Any) -> Iterator[Encoder]:
        """The encoder while the block runs; jobs using the same model run side by side (a
        search during an index run), one needing another model waits for them."""
        spec = EmbedSpec(model_key(model), **options)
        with lease_embedder(spec) as embedder:
            yield cls(embedder, spec.model)

    @property
    def model_type(self) -> str:
        return self.embedder.resolved.model_type

    @property
    def folder(self) -> str:
        return str(self.embedder.resolved.path)

    @property
    def image_side(self) -> int:
        """The largest side of the model's input image (for decoding no larger than needed)."""
        processor = self.embedder.processor.image_processor
        sides = [224]
        for name in ("crop_size", "size"):
            value = getattr(processor, name, None)
            if isinstance(value, dict):
                sides.extend(int(v) for v in value.values() if isinstance(v, int | float))
            elif isinstance(value, int | float):
                sides.append(int(value))
        return max(sides) if len(sides) > 1 else 224

    @property
    def on_cpu(self) -> bool:
        return str(self.embedder.device) == "cpu"

    @property
    def parameters(self) -> int:
        return int(sum(parameter.numel() for parameter in self.embedder.model.parameters()))

    @contextmanager
    def threads(self, count: int) -> Iterator[None]:
        """Run the model on ``count`` CPU threads meanwhile. Torch's threads wait for each other
        at every operation; when decode processes hold the other cores, a second model thread
        only waits and slows the model many times over."""
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, count))
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 processor output → ``(B, D)`` L2-normalised float32."""
        import torch

        model = self.embedder.model
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(model.device, dtype=model.dtype)
        return self._features(model.get_image_features, pixel_values=tensor)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        vectors = self.embedder.embed_texts(texts)
        assert vectors is not None
        return np.asarray(vectors, dtype=np.float32)

    def encode_image_files(self, paths: list[str]) -> np.ndarray:
        vectors = self.embedder.embed_images(paths)
        assert vectors is not None
        return np.asarray(vectors, dtype=np.float32)

    def logit_scale_and_bias(self) -> tuple[float, float | None]:
        """``exp(logit_scale)`` and SigLIP's ``logit_bias`` (None for CLIP-style softmax)."""
        model = self.embedder.model
        scale = float(model.logit_scale.detach().float().exp().item())
        bias = getattr(model, "logit_bias", None)
        return scale, (
            float(bias.detach().float().reshape(-1)[0].item()) if bias is not None else None
        )

    def _features(self, method: Any, **inputs: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            output = method(**inputs)
        features = getattr(output, "pooler_output", output).float()
        features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return np.asarray(features.cpu().numpy(), dtype=np.float32)
