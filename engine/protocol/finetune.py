"""Messages of the fine-tuning capability: dataset inspection, plan, train, resume, evaluate, use.

Training runs in its own child process of the engine; its job streams ``Progress`` (stage
``training``, current = optimiser step, total = planned steps) and ``PartialResult`` events whose
``data`` holds one of ``{"train": TrainMetrics}``, ``{"eval": EvalPoint}``, ``{"checkpoint": …}``
or ``{"notice": str}``. **Stop and save** is ``PauseFinetune``, ``StopFinetune`` or ``Cancel`` of
the training job: the trainer drops the half-done step, writes a checkpoint and the adapter, and
the training job ends ``cancelled`` with ``result["run"]["resumable"] = True`` (state ``paused``
or ``stopped``); ``ResumeFinetune`` continues from that step with the same data order,
optimiser, scheduler and random state.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from engine.protocol.base import Command, DeviceChoice, Event  # noqa: F401

Recipe = Literal["projector", "language", "vision_language", "contrastive"]
FinetuneQuant = Literal["auto", "nf4", "none"]
OptimizerChoice = Literal["auto", "adamw_8bit", "adamw"]

# Kinds of dataset problems; each is also the name of its one-click fix.
ISSUE_KINDS: tuple[str, ...] = (
    "missing_image",  # fix: drop the row
    "unreadable_image",  # fix: drop the row
    "empty_text",  # fix: drop the row
    "duplicate",  # fix: keep the first copy
    "exif_rotated",  # fix: store an upright copy
    "colour_mode",  # fix: store an RGB copy (CMYK, 16-bit, transparency, palette)
    "too_small",  # fix: store an enlarged copy
    "too_large",  # fix: store a scaled-down copy
    "extreme_aspect",  # fix: store a copy padded to a workable aspect ratio
)
BLOCKING_ISSUES = frozenset({"missing_image", "unreadable_image", "empty_text"})


class FinetuneSettings(msgspec.Struct, forbid_unknown_fields=False):
    """Everything a person may set. ``None`` means "choose for me", and the plan says why."""

    recipe: Recipe = "language"
    quant: FinetuneQuant = "auto"  # nf4 = QLoRA (4-bit base); none = LoRA on a bf16 base
    device: DeviceChoice = "auto"
    rank: int | None = None
    alpha: int | None = None
    dropout: float | None = None
    learning_rate: float | None = None
    vision_learning_rate: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    epochs: int | None = None
    max_steps: int | None = None  # a cap on optimiser steps (the plan shows the real total)
    warmup_ratio: float | None = None
    weight_decay: float | None = None
    max_grad_norm: float | None = None
    optimizer: OptimizerChoice = "auto"
    gradient_checkpointing: bool | None = None
    eval_every: int | None = None  # optimiser steps between evaluations
    checkpoint_every: int | None = None  # optimiser steps between checkpoints
    early_stopping_patience: int | None = None  # evaluations without improvement; 0 = off
    max_length: int | None = None  # longest example allowed (tokens); None: the model's limit
    image_max_pixels: int | None = None  # image budget for dynamic-resolution models
    seed: int = 0
    caption_prompt: str = "Describe this image."
    fixes: list[str] = msgspec.field(default_factory=lambda: list(ISSUE_KINDS))
    trial_step: bool = True  # a forward+backward on the worst-case batch before the run
    allow_pickle: bool = False
    trust_remote_code: bool = False


# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------


class DatasetIssue(msgspec.Struct, forbid_unknown_fields=False):
    kind: str  # one of ISSUE_KINDS, or "parse_error"
    message: str
    row: int | None = None  # index into DatasetReport.rows (None: the row could not be read)
    path: str = ""
    blocking: bool = False  # training refuses to start while it is not fixed


class DatasetRow(msgspec.Struct, forbid_unknown_fields=False):
    index: int
    images: list[str]
    prompt: str  # the first user text (for the grid)
    answer: str  # the last assistant text
    turns: int
    source: str
    split: Literal["train", "eval"] = "train"
    probe: bool = False  # one of the fixed probe rows answered before and after training


class DatasetReport(msgspec.Struct, forbid_unknown_fields=False):
    folder: str
    format: str  # sidecar_txt | metadata_jsonl | csv
    kind: str  # caption | qa | messages | mixed
    rows: list[DatasetRow]
    issues: list[DatasetIssue]
    train_rows: int
    eval_rows: int
    probe_rows: int
    split_reason: str
    fixes_applied: list[str] = msgspec.field(default_factory=list)


class SettingChoice(msgspec.Struct, forbid_unknown_fields=False):
    """One resolved value of the plan, and why it has this value."""

    name: str
    value: Any
    reason: str
    auto: bool = True  # False when the person set it


class TokenSpan(msgspec.Struct, forbid_unknown_fields=False):
    """A run of tokens of one kind in the "what will be trained" view."""

    text: str
    kind: Literal["prompt", "image", "trained", "pad"]
    count: int = 1


class MemoryItem(msgspec.Struct, forbid_unknown_fields=False):
    name: str  # weights | adapter | gradients | optimiser | activations | runtime
    bytes: int
    note: str = ""


class TrialResult(msgspec.Struct, forbid_unknown_fields=False):
    ok: bool
    peak_bytes: int
    seconds: float
    batch_size: int
    tokens: int
    message: str = ""


class FinetunePlan(msgspec.Struct, forbid_unknown_fields=False):
    model: str
    family: str
    recipe: Recipe
    recipe_summary: str
    settings: list[SettingChoice]
    trainable: dict[str, int]  # parameters trained per part: language / vision / projector
    targets: list[str]  # the module-path patterns LoRA is applied to
    memory: list[MemoryItem]
    total_bytes: int
    available_bytes: int | None
    verdict: Literal["fits", "tight", "does_not_fit", "unknown"]
    advice: list[str]
    train_rows: int
    eval_rows: int
    skipped_rows: list[DatasetIssue]
    longest_tokens: int
    longest_image_tokens: int
    mean_tokens: float
    steps_per_epoch: int
    total_steps: int
    preview: list[TokenSpan]  # one example, trained tokens marked
    warnings: list[str] = msgspec.field(default_factory=list)
    trial: TrialResult | None = None


class TrainMetrics(msgspec.Struct, forbid_unknown_fields=False):
    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    tokens_per_s: float
    samples_per_s: float
    peak_memory_bytes: int
    data_wait_fraction: float  # share of wall time spent waiting for batches
    eta_s: float | None
    elapsed_s: float


class EvalPoint(msgspec.Struct, forbid_unknown_fields=False):
    step: int
    eval_loss: float
    best_loss: float
    best_step: int
    on: Literal["held_out", "training_rows"] = "held_out"


class RunInfo(msgspec.Struct, forbid_unknown_fields=False):
    """A training run folder as the engine sees it (for resume offers and the wizard)."""

    run_dir: str
    model: str
    recipe: str
    state: Literal["running", "paused", "stopped", "interrupted", "done", "failed"]
    step: int
    total_steps: int
    adapter_dir: str | None = None
    best_eval_loss: float | None = None
    resumable: bool = False
    message: str = ""
    merged_dir: str | None = None  # contrastive runs: a full model folder for search
    history: list[dict[str, Any]] = msgspec.field(default_factory=list)


class ProbeAnswer(msgspec.Struct, forbid_unknown_fields=False):
    images: list[str]
    prompt: str
    reference: str
    base: str
    adapter: str


class Evaluation(msgspec.Struct, forbid_unknown_fields=False):
    on: Literal["held_out", "training_rows"]
    rows: int
    base_loss: float
    adapter_loss: float
    metrics: dict[str, dict[str, float]]  # "base"/"adapter" -> metric -> value
    probes: list[ProbeAnswer]
    kind: str = "text"  # text | extraction | retrieval


def decode_report(result: dict[str, Any] | None) -> DatasetReport:
    return msgspec.convert((result or {})["report"], DatasetReport)


def decode_plan(result: dict[str, Any] | None) -> FinetunePlan:
    return msgspec.convert((result or {})["plan"], FinetunePlan)


def decode_run(result: dict[str, Any] | None) -> RunInfo:
    return msgspec.convert((result or {})["run"], RunInfo)


def decode_evaluation(result: dict[str, Any] | None) -> Evaluation:
    return msgspec.convert((result or {})["evaluation"], Evaluation)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


class InspectDataset(Command, tag="inspect_dataset"):
    """Read a dataset folder and report rows, problems and the held-out split.

    ``fixes`` previews the report after those one-click fixes (nothing is written)."""

    job_id: str
    folder: str
    caption_prompt: str = "Describe this image."
    fixes: list[str] = msgspec.field(default_factory=list)
    seed: int = 0


class PlanFinetune(Command, tag="plan_finetune"):
    """Resolve every setting (with reasons), count tokens with the model's processor, plan memory;
    with ``trial`` also run one forward+backward on the worst-case batch in a child process."""

    job_id: str
    model: str
    data: str
    settings: FinetuneSettings = msgspec.field(default_factory=FinetuneSettings)
    trial: bool = False


class StartFinetune(Command, tag="start_finetune"):
    job_id: str
    model: str
    data: str
    out_dir: str  # the run folder (created; must be empty or absent)
    settings: FinetuneSettings = msgspec.field(default_factory=FinetuneSettings)


class ResumeFinetune(Command, tag="resume_finetune"):
    """Continue a stopped or interrupted run from its newest intact checkpoint."""

    job_id: str
    run_dir: str


class PauseFinetune(Command, tag="pause_finetune"):
    """Stop and save to free the GPU; ``ResumeFinetune`` continues from the same step.

    The training job then ends ``cancelled`` with its run ``paused``."""

    job_id: str
    run_dir: str


class StopFinetune(Command, tag="stop_finetune"):
    """Stop and save (as ``Cancel`` of the training job does); the run stays resumable."""

    job_id: str
    run_dir: str


class ListFinetuneRuns(Command, tag="list_finetune_runs"):
    job_id: str
    runs_dir: str  # a folder whose subfolders are run folders (or one run folder)
    history: bool = False  # each run's curve so far too (its steps and evaluations)


class EvaluateAdapter(Command, tag="evaluate_adapter"):
    """Base versus adapter on the held-out rows (or the training rows when none are held out):
    loss, answer metrics, and side-by-side answers for the probe images."""

    job_id: str
    run_dir: str
    max_new_tokens: int = 64
    probes: int = 8


class MergeAdapter(Command, tag="merge_adapter"):
    """Merge the adapter into a bf16 (never 4-bit) copy of the base and check it answers alike."""

    job_id: str
    run_dir: str
    out_dir: str


class ExportAdapter(Command, tag="export_adapter"):
    """Copy the adapter folder (peft format, with its VisionDesk notes) somewhere else."""

    job_id: str
    run_dir: str
    out_dir: str
