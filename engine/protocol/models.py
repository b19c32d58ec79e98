"""Messages of the models capability (commands and events), added to the unions by the package.

Also the value types that travel in their results (a memory plan, an installed model) and the one
rule that turns "bytes needed" and "bytes available" into a verdict, shared by engine and GUI.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.protocol.base import Command, DeviceChoice, Event, Quantization  # noqa: F401
from engine.protocol.wording import counted

Verdict = Literal["fits", "tight", "does_not_fit", "unknown"]

# A plan above this share of the device's memory is "tight": it loads, but a bigger image, a
# longer conversation or another program's allocation can push it over.
TIGHT_SHARE = 0.85

GIB = 1024**3
MIN_FREE_BYTES = 10**9  # a download leaves at least 1 GB free (decimal, as disks are counted)
# Where the Hugging Face token lives in the OS keyring: the GUI stores it, the engine reads it.
HUB_TOKEN_SERVICE = "VisionDesk"
HUB_TOKEN_USER = "huggingface"


class ModelsErrorCode:
    """Error codes of model-manager jobs, in addition to ``ErrorCode``."""

    GATED = "model_gated"  # the repo needs an accepted licence and a Hugging Face token
    NOT_ENOUGH_DISK = "not_enough_disk"
    NETWORK = "network"
    # The Hub refused the token sent (wrong, expired or revoked): a new one is needed, not a retry.
    TOKEN_REJECTED = "token_rejected"


def fit_verdict(required_bytes: int, available_bytes: int | None) -> Verdict:
    """fits / tight / does_not_fit for a plan against a device's memory (unknown without one)."""
    if not available_bytes or available_bytes <= 0:
        return "unknown"
    if required_bytes <= available_bytes * TIGHT_SHARE:
        return "fits"
    if required_bytes <= available_bytes:
        return "tight"
    return "does_not_fit"


def format_bytes(value: int | None, binary: bool = False) -> str:
    """Disk and download sizes in decimal units (1.23 GB, 50.00 TB); memory in binary ones
    (5.49 GiB), the way GPU memory is counted."""
    if value is None:
        return "unknown"
    units = (
        (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
        if binary
        else (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))
    )
    for index, (unit, size) in enumerate(units):
        if abs(value) >= size:
            return f"{value / size:.{2 if index <= 1 else 0}f} {unit}"
    return f"{value} B"


def format_count(value: int) -> str:
    """7.06 B / 303 M / 12 k parameters."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.{2 if unit == 'B' else 0}f} {unit}"
    return str(value)


def describe_plan(plan: MemoryPlan) -> list[tuple[str, str]]:
    """A plan as label/value rows: the CLI table and the GUI use the same words."""

    def memory(value: int | None) -> str:
        return format_bytes(value, binary=True)

    rows = [
        ("model", f"{plan.model} ({plan.model_type})"),
        ("quantisation", f"{plan.quant} on {plan.device} ({plan.dtype})"),
        ("parameters", format_count(plan.params_total)),
        ("weights", memory(plan.weights_bytes)),
        ("  vision tower + projector", memory(plan.vision_bytes)),
        ("image tokens per image", f"{plan.image_tokens_per_image} at "
         f"{plan.image_width}x{plan.image_height}"),
        ("sequence", f"{plan.sequence_tokens} tokens ({counted(plan.images, 'image')}, "
         f"{plan.context_tokens} context)"),
        ("KV cache", memory(plan.kv_cache_bytes)),
        ("activations", memory(plan.activation_bytes)),
        ("runtime overhead", memory(plan.overhead_bytes)),
        ("total", memory(plan.total_bytes)),
        ("device memory", f"{memory(plan.available_bytes)} ({plan.device_name})"),
        ("verdict", plan.verdict.replace("_", " ")),
    ]  # fmt: skip
    if plan.cross_attention_tokens:
        rows.insert(7, ("cross-attention states", f"{plan.cross_attention_tokens} tokens"))
    return rows


# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------


class MemoryPlan(msgspec.Struct, forbid_unknown_fields=False):
    """What a model needs on a device, part by part, and whether it fits. Sizes in bytes."""

    model: str
    model_type: str
    quant: str
    device: str
    dtype: str
    image_width: int
    image_height: int
    images: int
    context_tokens: int
    params_total: int
    params_vision: int
    params_projector: int
    params_language: int
    params_quantized: int  # in Linear layers that bitsandbytes converts
    weights_bytes: int
    vision_bytes: int  # share of weights_bytes in the vision tower (projector included)
    kv_cache_bytes: int
    image_tokens_per_image: int  # image tokens the real processor puts in the prompt
    sequence_tokens: int  # prompt tokens with all images, plus context_tokens
    cross_attention_tokens: int  # vision states attended by cross-attention layers (mllama)
    activation_bytes: int
    allocated_bytes: int  # weights + KV cache + activations: what torch allocates at peak
    overhead_bytes: int  # runtime (CUDA context, allocator slack) outside torch's count
    total_bytes: int
    available_bytes: int | None
    device_name: str
    verdict: Verdict
    advice: list[str] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)
    needs_consent: list[str] = msgspec.field(default_factory=list)  # "pickle", "remote_code"


class InstalledModel(msgspec.Struct, forbid_unknown_fields=False):
    """A model on this machine: in the Hugging Face cache or in a folder VisionDesk knows."""

    model: str  # what goes into LoadModel.model: a repo id or a folder path
    source: Literal["hf-cache", "folder"]
    path: str
    model_type: str
    kind: Literal["vlm", "embedding"]
    size_bytes: int
    complete: bool  # every weight file named by the checkpoint is present
    revision: str = ""
    needs_consent: list[str] = msgspec.field(default_factory=list)
    is_demo: bool = False  # a tiny random-weight model built by make-demo


class ImageBudget(msgspec.Struct, forbid_unknown_fields=True):
    width: int
    height: int


class CatalogueEntry(msgspec.Struct, forbid_unknown_fields=True):
    """A recommended model (``resources/catalogue.json``)."""

    repo_id: str
    name: str
    family: str  # transformers model_type
    kind: Literal["vlm", "embedding"]
    params_b: float  # billions of parameters
    licence: str
    good_at: list[str]  # documents, charts, chat, ocr, search, ...
    image_budget: ImageBudget
    min_vram_gb: dict[str, float]  # quantisation -> GiB with one image at the budget, 2k context
    cpu_ram_gb: float  # float32 on the CPU
    gated: bool = False
    verified: bool = False  # repo id, licence and size checked against the model card
    notes: str = ""

    def fit(self, quant: str, available_bytes: int | None) -> Verdict:
        """The catalogue's estimate against a device (the planner refines it from the config)."""
        need = self.min_vram_gb.get(quant)
        return "unknown" if need is None else fit_verdict(int(need * GIB), available_bytes)


class Catalogue(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    models: list[CatalogueEntry]
    picks: dict[str, list[str]]  # "cpu", "6gb", "8-12gb", "24gb", "embeddings" -> repo ids
    note: str = ""

    def entry(self, repo_id: str) -> CatalogueEntry | None:
        return next((entry for entry in self.models if entry.repo_id == repo_id), None)


def decode_catalogue(data: bytes | str) -> Catalogue:
    """Raises ``msgspec.ValidationError`` naming the field that is wrong."""
    return msgspec.json.decode(data, type=Catalogue)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


class PlanMemory(Command, tag="plan_memory"):
    """Plan a model's memory from its config and processor files alone (no weights needed)."""

    job_id: str
    model: str  # a folder, a repo id in the cache, or (fetch_config) a repo id on the Hub
    quant: Quantization = "auto"
    device: DeviceChoice = "auto"
    image_width: int = 1024
    image_height: int = 768
    images: int = 1
    context_tokens: int = 2048  # text tokens: the conversation and the answer
    vram_bytes: int | None = None  # plan against this much memory instead of the detected GPU
    fetch_config: bool = False  # a repo id not in the cache: fetch only its small files first
    trust_remote_code: bool = False
    endpoint: str | None = None  # a Hub mirror; default HF_ENDPOINT or huggingface.co


class DownloadModel(Command, tag="download_model"):
    """Download a repo into the standard Hugging Face cache; resumable, cancellable."""

    job_id: str
    repo_id: str
    revision: str = "main"
    allow_patterns: list[str] | None = None  # None: weights (safetensors), configs, tokenizer
    cache_dir: str | None = None  # None: huggingface_hub's (HF_HUB_CACHE / HF_HOME)
    endpoint: str | None = None
    min_free_bytes: int = MIN_FREE_BYTES  # refuse when the download would leave less free


class ListInstalled(Command, tag="list_installed"):
    job_id: str
    folders: list[str] = msgspec.field(default_factory=list)  # imported or added model folders
    cache_dir: str | None = None


class DeleteModel(Command, tag="delete_model"):
    """Delete a repo from the cache, or a folder inside ``managed_root`` (never elsewhere)."""

    job_id: str
    model: str
    cache_dir: str | None = None
    managed_root: str | None = None
    # The fine-tuning runs folder: a run training on the model there (in any process) is asked
    # to stop before the model may go.
    runs_dir: str | None = None


class ImportFolder(Command, tag="import_folder"):
    """Copy a model folder into ``destination_root``, checked first, with progress and cancel."""

    job_id: str
    source: str
    destination_root: str
    name: str | None = None  # default: the source folder's name


class Embed(Command, tag="embed"):
    """Image and text embeddings from a CLIP/SigLIP-style dual encoder, L2-normalised."""

    job_id: str
    model: str
    images: list[str] = msgspec.field(default_factory=list)  # absolute file paths
    texts: list[str] = msgspec.field(default_factory=list)
    quant: Quantization = "none"
    device: DeviceChoice = "auto"
    normalize: bool = True
    allow_pickle: bool = False
    trust_remote_code: bool = False
