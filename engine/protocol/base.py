"""Core messages of the protocol: handshake, jobs, chat, status, errors; and shared value types.

Every command subclasses ``Command`` and every event ``Event``, each with its own tag; the
package ``__init__`` collects all subclasses (from this module and each capability's module)
into the two tagged unions that are decoded.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

PROTOCOL_VERSION = 1
ENGINE_VERSION = "0.1.0"
# Pictures the engine opens at all: more pixels than this is how a decompression bomb looks,
# a bigger file than this no document or photo needs. The window checks attachments by them.
MAX_IMAGE_PIXELS = 120_000_000
MAX_FILE_BYTES = 512 * 1024 * 1024
# Pictures for models that read them at their own resolution (the Qwen2-VL family) are scaled to
# at most this many pixels unless a request says otherwise: Qwen's recommended 1280 × 28 × 28
# (~1 MP, ~1,280 image tokens). The models' own limit, ~12.8 MP, lets a phone photo become
# ~15,000 tokens: minutes of prefill, and gigabytes of cache and activations.
CHAT_IMAGE_MAX_PIXELS = 1280 * 28 * 28

FinishReason = Literal["done", "length", "cancelled", "error"]
Quantization = Literal["nf4", "int8", "none", "auto"]
DeviceChoice = Literal["auto", "cuda", "cpu", "mps"]


class ErrorCode:
    """Stable error codes carried by ``Finished.error_code`` and ``ProtocolError.code``."""

    BAD_INPUT = "bad_input"
    OUT_OF_MEMORY = "out_of_memory"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_UNSAFE = "model_unsafe"  # pickle-only weights or remote code without consent
    UNSUPPORTED = "unsupported"
    NO_MODEL_LOADED = "no_model_loaded"
    CLOUD_NOT_ALLOWED = "cloud_not_allowed"
    CLOUD_FAILED = "cloud_failed"
    ENGINE_DIED = "engine_died"
    BUSY = "busy"
    INTERNAL = "internal"
    # Protocol-level codes (ProtocolError only).
    MALFORMED = "malformed"
    VERSION_MISMATCH = "version_mismatch"
    UNKNOWN_JOB = "unknown_job"


MODEL_ERROR_CODES = frozenset(
    {ErrorCode.MODEL_NOT_FOUND, ErrorCode.MODEL_UNSAFE, ErrorCode.UNSUPPORTED}
)


# ---------------------------------------------------------------------------------------------
# Shared value types
# ---------------------------------------------------------------------------------------------


class Sampling(msgspec.Struct, forbid_unknown_fields=False):
    """Generation settings. ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None
    repetition_penalty: float = 1.0


class ChatMessage(msgspec.Struct):
    """One turn of a conversation. ``images`` are absolute file paths."""

    role: Literal["system", "user", "assistant"]
    text: str
    images: list[str] = msgspec.field(default_factory=list)


class DeviceInfo(msgspec.Struct):
    kind: Literal["cuda", "mps", "cpu"]
    name: str
    index: int = 0
    total_memory: int | None = None  # bytes
    free_memory: int | None = None  # bytes


class ModelInfo(msgspec.Struct):
    """What is resident in the engine."""

    model: str
    path: str
    family: str
    quant: str
    device: str
    dtype: str
    memory_bytes: int = 0
    # Local models: how they decode ("cuda-graphs", "static" or "generate"); "" elsewhere.
    decoding: str = ""
    adapter: str = ""  # a LoRA adapter folder applied over the model, if one is


# ---------------------------------------------------------------------------------------------
# Commands: desktop/CLI -> engine
# ---------------------------------------------------------------------------------------------


class Command(msgspec.Struct, tag_field="type"):
    """Base of every command. Jobs carry a ``job_id``; their end is one ``Finished`` event."""


class Event(msgspec.Struct, tag_field="type"):
    """Base of every event sent by the engine."""


class Hello(Command, tag="hello"):
    protocol_version: int
    client: str = "unknown"


class LoadModel(Command, tag="load_model"):
    job_id: str
    model: str  # a local folder or a Hugging Face repo id found in the local cache
    quant: Quantization = "auto"
    device: DeviceChoice = "auto"
    allow_pickle: bool = False
    trust_remote_code: bool = False
    adapter: str | None = None  # a fine-tuned adapter folder applied over the base


class Chat(Command, tag="chat"):
    """Generate the assistant's next turn with the resident model (loading it first if named)."""

    job_id: str
    messages: list[ChatMessage]
    sampling: Sampling = msgspec.field(default_factory=Sampling)
    model: str | None = None  # if set and not resident, it is loaded first with quant/device
    quant: Quantization = "auto"
    device: DeviceChoice = "auto"
    return_token_ids: bool = False
    # Routing (see engine.protocol.cloud): None follows the policy; a provider alone means
    # "this request goes there". Keys never travel here: the engine reads the OS keyring.
    backend: str | None = None  # local | anthropic | openai | gemini | remote
    backend_model: str | None = None  # the provider's model id; None = its default
    base_url: str | None = None  # the remote server's URL, or a provider endpoint override
    policy: str | None = None  # local_only (default) | local_then_ask | local_then_cloud | …
    never_send: bool = False  # the conversation or document must never leave this machine
    adapter: str | None = None  # a fine-tuned adapter folder applied over the base model
    # At most this many pixels per picture for models that read pictures at their own
    # resolution (local Qwen2-VL family); None: CHAT_IMAGE_MAX_PIXELS.
    image_max_pixels: int | None = None
    allow_pickle: bool = False  # consent to ``model``'s pickle weights (as on ``LoadModel``)
    trust_remote_code: bool = False  # consent to ``model``'s own Python code


class Cancel(Command, tag="cancel"):
    job_id: str


class Unload(Command, tag="unload"):
    job_id: str


class GetStatus(Command, tag="get_status"):
    pass


class Shutdown(Command, tag="shutdown"):
    pass


# ---------------------------------------------------------------------------------------------
# Events: engine -> desktop/CLI
# ---------------------------------------------------------------------------------------------


class Welcome(Event, tag="welcome"):
    protocol_version: int
    engine_version: str
    pid: int
    devices: list[DeviceInfo]


class JobStarted(Event, tag="job_started"):
    job_id: str
    kind: str


class Delta(Event, tag="delta"):
    """A piece of streamed text. Concatenating a job's deltas gives its full text."""

    job_id: str
    text: str


class Progress(Event, tag="progress"):
    job_id: str
    stage: str
    current: float = 0.0
    total: float | None = None
    message: str = ""


class PartialResult(Event, tag="partial_result"):
    job_id: str
    data: dict[str, Any]


class Finished(Event, tag="finished"):
    """Exactly one per job: its end, with a reason, and on error a stable code and a sentence."""

    job_id: str
    reason: FinishReason
    error_code: str | None = None
    message: str = ""
    result: dict[str, Any] | None = None


class EngineStatus(Event, tag="status"):
    state: Literal["idle", "busy", "loading"]
    loaded: ModelInfo | None = None
    devices: list[DeviceInfo] = msgspec.field(default_factory=list)
    running_jobs: list[str] = msgspec.field(default_factory=list)


class ProtocolError(Event, tag="protocol_error"):
    """A line the engine could not accept. The engine keeps serving."""

    code: str
    message: str
    line: str = ""
