"""Contrastive LoRA for CLIP/SigLIP search models, on a person's image-caption pairs.

LoRA (peft) on the attention of both towers, each tower with its own learning rate; embeddings
are L2-normalised; the temperature is learnable but its logit scale is clamped at 100 (CLIP's
own cap: without it the scale drifts up on small data and the model overfits); the loss is the
symmetric cross-entropy of image->text and text->image. The checkpoint, resume and stop
machinery is the VLM trainer's. At the end the LoRA is merged into a full copy of the model
(``merged/``): search models are small, and the search index is rebuilt by pointing it there.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from typing import Any

from engine.finetune.adapters import apply_adapter, load_base
from engine.finetune.config import TrainConfig
from engine.finetune.data import Example
from engine.finetune.loop import Report, Trainer, move_batch
from engine.finetune.validate import read_examples

MAX_LOGIT_SCALE = math.log(100.0)
SCALE_FILE = "logit_scale.safetensors"


class ContrastiveTrainer(Trainer):
    def setup(self) -> None:
        from engine.finetune.adapters import attach_trainable
        from engine.finetune.loop import _seed_everything

        config = self.config
        _seed_everything(config.seed)
        self.report({"event": "loading", "message": f"Loading {config.model_name}"})
        base, self.processor = load_base(
            config.model_path,
            kind="contrastive",
            quant="none",
            device=config.device,
            dtype=config.dtype,
            skip_modules=[],
        )
        self.model = attach_trainable(
            base,
            regex=config.target_regex,
            modules_to_save=[],
            rank=config.rank,
            alpha=config.alpha,
            dropout=config.dropout,
            gradient_checkpointing=False,
        )
        self.scale = _logit_scale(self.model)
        self.scale.requires_grad_(True)  # the learnable temperature
        self.model.train()
        from engine.finetune.adapters import trainable_tensors

        self.params = trainable_tensors(self.model)
        self.optimizer = self._optimizer()
        import torch

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)

    # --- the contrastive objective -----------------------------------------------------------
    def collate(self, rows: list[Example], keys: list[int] | None = None) -> dict[str, Any]:
        return pair_batch(self.processor, rows)

    def window_items(self, window: list[dict[str, Any]]) -> int:
        return len(window)

    def forward_loss(self, batch: dict[str, Any], items: int) -> Any:
        images, texts = embed_pairs(self.model, self._to_device(batch))
        return contrastive_loss(images, texts, self.scale) / items

    def after_update(self) -> None:
        import torch

        with torch.no_grad():
            self.scale.clamp_(0.0, MAX_LOGIT_SCALE)

    def row_length(self, index: int) -> int:
        return len(self.train_rows[index].answer)

    def eval_loss(self) -> float:
        import torch

        self.model.eval()
        try:
            with torch.no_grad():
                batch = self._to_device(pair_batch(self.processor, self.eval_rows))
                images, texts = embed_pairs(self.model, batch)
                return float(contrastive_loss(images, texts, self.scale))
        finally:
            self.model.train()

    def adapter_notes(self, reason: str) -> dict[str, Any]:
        return {
            **super().adapter_notes(reason),
            "adapter_kind": "peft",
            "logit_scale_file": SCALE_FILE,
        }

    def _save_final(self, reason: str) -> Any:
        """The adapter, its learnt temperature, and a merged full model for the search index."""
        from safetensors.torch import save_file

        adapter = super()._save_final(reason)
        save_file({"logit_scale": self.scale.detach().cpu().reshape(-1)}, str(adapter / SCALE_FILE))
        merged = self.model.merge_and_unload()
        out = self.config.run / "merged"
        tmp = out.parent / f".tmp-merged-{uuid.uuid4().hex[:6]}"
        merged.save_pretrained(str(tmp), safe_serialization=True)
        self.processor.save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        return adapter


def pair_batch(processor: Any, rows: list[Example]) -> dict[str, Any]:
    from engine.documents.images import load_image

    images = [load_image(row.images[0]) for row in rows]
    texts = [row.answer for row in rows]
    batch = processor(
        text=texts, images=images, padding="max_length", truncation=True, return_tensors="pt"
    )
    if "attention_mask" not in batch:  # SigLIP's processor returns none; every text is padded
        import torch

        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    return dict(batch)


def embed_pairs(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """L2-normalised image and text embeddings of a batch of pairs."""
    import torch.nn.functional as F

    text_inputs = {"input_ids": batch["input_ids"]}
    if "attention_mask" in batch and _uses_mask(model):
        text_inputs["attention_mask"] = batch["attention_mask"]
    images = model.get_image_features(pixel_values=batch["pixel_values"])
    texts = model.get_text_features(**text_inputs)
    images = getattr(images, "pooler_output", images)
    texts = getattr(texts, "pooler_output", texts)
    return F.normalize(images, dim=-1), F.normalize(texts, dim=-1)


def contrastive_loss(images: Any, texts: Any, logit_scale: Any) -> Any:
    """Symmetric cross-entropy over the batch's image-text similarities."""
    import torch
    import torch.nn.functional as F

    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * images @ texts.t()
    target = torch.arange(len(images), device=images.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def recall_at_k(images: Any, texts: Any, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Image->text and text->image recall@k for aligned pairs (row i belongs with row i)."""
    import torch

    similarity = images @ texts.t()
    target = torch.arange(len(images))
    metrics: dict[str, float] = {}
    for k in ks:
        k_eff = min(k, len(images))
        i2t = similarity.topk(k_eff, dim=1).indices
        t2i = similarity.t().topk(k_eff, dim=1).indices
        metrics[f"image_to_text_r@{k}"] = float((i2t == target[:, None]).any(1).float().mean())
        metrics[f"text_to_image_r@{k}"] = float((t2i == target[:, None]).any(1).float().mean())
    return metrics


def embed_rows(
    model: Any, processor: Any, rows: list[Example], device: str, dtype: Any
) -> tuple[Any, Any]:
    import torch

    model.eval()
    with torch.no_grad():
        batch = move_batch(pair_batch(processor, rows), model.device, dtype)
        images, texts = embed_pairs(model, batch)
    return images.float().cpu(), texts.float().cpu()


def evaluate_contrastive(config: TrainConfig, report: Report) -> dict[str, Any]:
    """Recall@k and loss of the base and the adapted model on the held-out (or training) pairs."""
    from safetensors.torch import load_file

    from engine.finetune.adapters import torch_dtype

    held = read_examples(config.data_file("eval"))
    rows = held or read_examples(config.data_file("train"))
    dtype = torch_dtype(config.dtype)
    model, processor = load_base(
        config.model_path,
        kind="contrastive",
        quant="none",
        device=config.device,
        dtype=config.dtype,
        skip_modules=[],
    )
    base_images, base_texts = embed_rows(model, processor, rows, config.device, dtype)
    base_loss = float(contrastive_loss(base_images, base_texts, _logit_scale(model).detach().cpu()))
    adapted = apply_adapter(model, config.run / "adapter")
    scale_file = config.run / "adapter" / SCALE_FILE
    if scale_file.is_file():
        _logit_scale(adapted).data.copy_(
            load_file(str(scale_file))["logit_scale"].reshape(_logit_scale(adapted).shape)
        )
    images, texts = embed_rows(adapted, processor, rows, config.device, dtype)
    loss = float(contrastive_loss(images, texts, _logit_scale(adapted).detach().cpu()))
    report({"event": "notice", "message": f"Recall measured on {len(rows)} pairs"})
    return {
        "on": "held_out" if held else "training_rows",
        "rows": len(rows),
        "base_loss": base_loss,
        "adapter_loss": loss,
        "kind": "retrieval",
        "probes": [],
        "metrics": {
            "base": recall_at_k(base_images, base_texts),
            "adapter": recall_at_k(images, texts),
        },
    }


def _logit_scale(model: Any) -> Any:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.logit_scale


def _uses_mask(model: Any) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner.config, "model_type", "") != "siglip"  # SigLIP pools the padded end
