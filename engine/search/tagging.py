"""Zero-shot tags: how well each image matches each of the user's labels, as a probability.

Each label becomes one text vector, the normalised mean of its prompts ("a photo of a {}.",
"a scan of a {}.", …: the prompt-ensemble of the CLIP paper). An image's logits are the model's
own ``logit_scale`` times the cosine similarities (plus SigLIP's ``logit_bias``); CLIP-style
models were trained with a softmax over texts, so their scores are a softmax over the labels,
while SigLIP was trained with a sigmoid per pair, so each label gets its own sigmoid.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from engine.errors import BadInput
from engine.search.encoder import Encoder
from engine.search.store import IndexStore, ModelRow

SOFTMAX_THRESHOLD = 0.5
SIGMOID_THRESHOLD = 0.1
MIN_STORED_SCORE = 0.005  # lower scores are not kept: no threshold a person would set is below
CHUNK = 20_000


def label_vectors(encoder: Encoder, labels: list[str], templates: list[str]) -> np.ndarray:
    """One normalised vector per label, averaged over the prompt templates."""
    prompts = [template.format(label) for label in labels for template in templates]
    vectors = encoder.encode_texts(prompts).reshape(len(labels), len(templates), -1).mean(axis=1)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def scores(images: np.ndarray, labels: np.ndarray, scale: float, bias: float | None) -> np.ndarray:
    """``(n_images, n_labels)`` probabilities (see the module docstring for which kind)."""
    logits = scale * (images @ labels.T)
    if bias is not None:
        return (1.0 / (1.0 + np.exp(-(logits + bias)))).astype(np.float32)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def check_labels(labels: list[str], templates: list[str]) -> tuple[list[str], list[str]]:
    cleaned = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
    if not cleaned:
        raise BadInput("Give at least one label to tag images with.")
    templates = templates or ["{}"]
    for template in templates:
        if template.count("{}") != 1:
            raise BadInput(f"A prompt template needs exactly one {{}} for the label: {template!r}")
    return cleaned, templates


def set_labels(
    store: IndexStore,
    model: ModelRow,
    labels: list[str],
    templates: list[str],
    threshold: float | None,
    has_bias: bool,
) -> None:
    """Replace the model's label set (and drop the scores of the old one)."""
    chosen = (
        threshold
        if threshold is not None
        else (SIGMOID_THRESHOLD if has_bias else SOFTMAX_THRESHOLD)
    )
    if not 0.0 <= chosen <= 1.0:
        raise BadInput("The tag threshold is a probability between 0 and 1.")
    with store.transaction():
        store.db.execute("DELETE FROM tags WHERE model_id = ?", (model.id,))
        store.db.execute("DELETE FROM labels WHERE model_id = ?", (model.id,))
        store.db.executemany(
            "INSERT INTO labels(model_id, label, threshold, templates) VALUES (?, ?, ?, ?)",
            [(model.id, label, chosen, json.dumps(templates)) for label in labels],
        )


def stored_labels(store: IndexStore, model_id: int) -> tuple[list[str], list[str]]:
    rows = store.db.execute(
        "SELECT label, templates FROM labels WHERE model_id = ? ORDER BY rowid", (model_id,)
    ).fetchall()
    if not rows:
        return [], []
    return [str(row[0]) for row in rows], list(json.loads(rows[0][1]))


def tag_contents(
    store: IndexStore,
    encoder: Encoder,
    model: ModelRow,
    only_untagged: bool = False,
    cancelled: Callable[[], bool] = lambda: False,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """Score the model's stored image vectors against its labels; returns images scored."""
    labels, templates = stored_labels(store, model.id)
    if not labels:
        return 0
    texts = label_vectors(encoder, labels, templates)
    scale, bias = encoder.logit_scale_and_bias()
    query = "SELECT content_id, vector FROM vectors WHERE model_id = ?"
    if only_untagged:
        query += " AND content_id NOT IN (SELECT content_id FROM tags WHERE model_id = ?)"
    rows = store.db.execute(
        query, (model.id, model.id) if only_untagged else (model.id,)
    ).fetchall()
    for start in range(0, len(rows), CHUNK):
        if cancelled():
            break
        chunk = rows[start : start + CHUNK]
        images = np.frombuffer(b"".join(row[1] for row in chunk), dtype=np.float32)
        probabilities = scores(images.reshape(len(chunk), -1), texts, scale, bias)
        with store.transaction():
            store.db.executemany(
                "INSERT OR REPLACE INTO tags(content_id, model_id, label, score) VALUES (?, ?, ?, ?)",
                [
                    (int(chunk[i][0]), model.id, labels[j], float(probabilities[i, j]))
                    for i, j in zip(*np.nonzero(probabilities >= MIN_STORED_SCORE), strict=True)
                ],
            )
        progress(min(start + CHUNK, len(rows)), len(rows))
    return len(rows)
