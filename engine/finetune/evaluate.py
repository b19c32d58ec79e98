"""Before and after: base versus adapter on held-out rows, and merging an adapter into a bf16 base.

All of it runs in the trainer process. The base is loaded once; its losses and answers are taken
first, then the adapter is applied over the same weights. Answer metrics are local (exact match,
token F1; field accuracy when the answers are JSON objects, as for extraction data): nothing is
sent to a cloud judge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from engine.finetune.adapters import apply_adapter, load_base, read_notes, torch_dtype
from engine.finetune.collate import Supervisor, stop_token_ids
from engine.finetune.config import TrainConfig
from engine.finetune.data import Example
from engine.finetune.loop import Report, move_batch, token_loss
from engine.finetune.validate import read_examples

METRIC_ROWS = 32  # answers generated for metrics (probe rows first)


def evaluate_run(
    config: TrainConfig, report: Report, max_new_tokens: int = 64, probes: int = 8
) -> dict[str, Any]:
    if config.kind == "contrastive":
        from engine.finetune.clip_lora import evaluate_contrastive

        return evaluate_contrastive(config, report)
    adapter = config.run / "adapter"
    read_notes(adapter)  # a clear error before a long load when there is no adapter yet
    held = read_examples(config.data_file("eval"))
    probe_rows = read_examples(config.data_file("probe"))[:probes]
    rows = held or probe_rows
    on = "held_out" if held else "training_rows"
    report({"event": "loading", "message": f"Loading {config.model_name} for evaluation"})
    model, processor = _load(config)
    supervisor = _supervisor(config, model, processor)
    answered = _answer_rows(probe_rows, rows)

    def measure(label: str, current: Any) -> tuple[float, list[str]]:
        report({"event": "notice", "message": f"Evaluating the {label} on {len(rows)} rows"})
        loss = token_loss(current, supervisor, rows, config.batch_size, _mover(config, current))
        answers = [generate(current, supervisor, row, max_new_tokens, config) for row in answered]
        return loss, answers

    base_loss, base_answers = measure("base model", model)
    adapted = apply_adapter(model, adapter)
    adapter_loss, adapter_answers = measure("adapter", adapted)
    references = [row.answer for row in answered]
    extraction = _all_json(references)
    metrics = {
        "base": answer_metrics(base_answers, references, extraction),
        "adapter": answer_metrics(adapter_answers, references, extraction),
    }
    probes_out = [
        {
            "images": row.images,
            "prompt": row.prompt,
            "reference": row.answer,
            "base": base_answers[i],
            "adapter": adapter_answers[i],
        }
        for i, row in enumerate(answered[: len(probe_rows)])
    ]
    return {
        "on": on,
        "rows": len(rows),
        "base_loss": base_loss,
        "adapter_loss": adapter_loss,
        "metrics": metrics,
        "probes": probes_out,
        "kind": "extraction" if extraction else "text",
    }


def generate(
    model: Any, supervisor: Supervisor, row: Example, max_new_tokens: int, config: TrainConfig
) -> str:
    """The model's greedy answer to ``row``'s conversation up to its last answer."""
    import torch

    from engine.documents.images import load_image

    last = max(i for i, turn in enumerate(row.turns) if turn.role == "assistant")
    turns = row.turns[:last]
    prompt = supervisor.render(turns, add_generation_prompt=True)
    images = [load_image(path) for turn in turns for path in turn.images]
    inputs = supervisor.processor(text=[prompt], images=images or None, return_tensors="pt")
    inputs = move_batch(dict(inputs), model.device, torch_dtype(config.dtype))
    tokenizer = supervisor.tokenizer
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
        )
    new = output[0, inputs["input_ids"].shape[-1] :]
    return str(tokenizer.decode(new, skip_special_tokens=True)).strip()


# --- metrics --------------------------------------------------------------------------------------


def answer_metrics(answers: list[str], references: list[str], extraction: bool) -> dict[str, float]:
    if not references:
        return {}
    exact = sum(_norm(a) == _norm(r) for a, r in zip(answers, references, strict=True))
    f1 = sum(_token_f1(a, r) for a, r in zip(answers, references, strict=True))
    metrics = {"exact_match": exact / len(references), "token_f1": f1 / len(references)}
    if extraction:
        valid, fields, right = 0, 0, 0
        for answer, reference in zip(answers, references, strict=True):
            expected = json.loads(reference)
            got = _json_object(answer)
            valid += got is not None
            for key, value in expected.items():
                fields += 1
                right += got is not None and _norm(str(got.get(key))) == _norm(str(value))
        metrics["valid_json"] = valid / len(references)
        metrics["field_accuracy"] = right / max(1, fields)
    return metrics


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower().rstrip("."))


def _token_f1(answer: str, reference: str) -> float:
    a, r = _norm(answer).split(), _norm(reference).split()
    if not a or not r:
        return float(a == r)
    common = sum(min(a.count(token), r.count(token)) for token in set(r))
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _all_json(references: list[str]) -> bool:
    return bool(references) and all(_json_object(reference) is not None for reference in references)


def _answer_rows(probe_rows: list[Example], rows: list[Example]) -> list[Example]:
    chosen = list(probe_rows)
    for row in rows:
        if len(chosen) >= METRIC_ROWS:
            break
        if row not in chosen:
            chosen.append(row)
    return chosen


# --- merging --------------------------------------------------------------------------------------


def merge_run(config: TrainConfig, out: Path, report: Report) -> dict[str, Any]:
    """Merge into a bf16 (CPU: float32) base, check it answers as the adapter does, save it."""
    import torch

    if out.exists() and any(out.iterdir()):
        from engine.errors import BadInput

        raise BadInput(f"{out} is not empty; choose a new folder for the merged model.")
    dtype = "float32" if config.device == "cpu" else config.dtype
    report({"event": "loading", "message": f"Loading {config.model_name} in {dtype} (never 4-bit)"})
    model, processor = load_base(
        config.model_path,
        kind=config.kind,
        quant="none",
        device=config.device,
        dtype=dtype,
        skip_modules=[],
        trust_remote_code=config.trust_remote_code,
    )
    adapted = apply_adapter(model, config.run / "adapter")
    supervisor = _supervisor(config, model, processor)
    rows = (read_examples(config.data_file("probe")) or read_examples(config.data_file("train")))[
        :4
    ]
    move = _mover(config, adapted, dtype)
    before = [_logits(adapted, supervisor, row, move) for row in rows]
    merged = adapted.merge_and_unload() if hasattr(adapted, "merge_and_unload") else adapted
    after = [_logits(merged, supervisor, row, move) for row in rows]
    diff = max(
        (float((a - b).abs().max()) for a, b in zip(before, after, strict=True)), default=0.0
    )
    same_argmax = all(
        bool(torch.equal(a.argmax(-1), b.argmax(-1))) for a, b in zip(before, after, strict=True)
    )
    tolerance = 1e-3 if dtype == "float32" else 5e-2
    report(
        {
            "event": "notice",
            "message": f"Merged model differs from the adapter by at most {diff:.2e}",
        }
    )
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:6]}"
    merged.save_pretrained(str(tmp), safe_serialization=True)
    processor.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {
        "merged_dir": str(out),
        "max_logit_diff": diff,
        "same_predictions": same_argmax,
        "matches": bool(same_argmax and diff <= tolerance),
        "checked_rows": len(rows),
        "dtype": dtype,
    }


def _logits(model: Any, supervisor: Supervisor, row: Example, move: Any) -> Any:
    import torch

    batch = supervisor.collate([row])
    batch.pop("labels")
    with torch.no_grad():
        return model(**move(batch)).logits.float().cpu()


def _load(config: TrainConfig) -> tuple[Any, Any]:
    return load_base(
        config.model_path,
        kind=config.kind,
        quant=config.quant,
        device=config.device,
        dtype=config.dtype,
        skip_modules=config.skip_modules,
        trust_remote_code=config.trust_remote_code,
    )


def _supervisor(config: TrainConfig, model: Any, processor: Any) -> Supervisor:
    stops = stop_token_ids(config.model_path, model.config, processor.tokenizer)
    return Supervisor(processor, model.config, stops, config.image_max_pixels)


def _mover(config: TrainConfig, model: Any, dtype: str | None = None) -> Any:
    target = torch_dtype(dtype or config.dtype)
    return lambda batch: move_batch(batch, model.device, target)
