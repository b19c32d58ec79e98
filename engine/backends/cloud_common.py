"""What every cloud backend shares: error codes, bounded retries, image encoding, JSON schemas.

Each provider module (anthropic, openai, gemini) subclasses ``CloudBackend`` and implements one
streamed request, the mapping of its SDK's exceptions, and its model list; the retry loop, the
schema adaptation, the jsonschema validation with one repair retry and the image encoding live
here, so the providers behave alike.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import io
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from engine.backends.base import CancelCheck, GenerationResult, TextSink
from engine.errors import BadInput, EngineError
from engine.keys import Key, missing_key_message, read_key, redact
from engine.protocol import ChatMessage, ErrorCode, ModelInfo, Sampling
from engine.protocol import cloud as c

log = logging.getLogger(__name__)

T = TypeVar("T")


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudConfig:
    """Timeouts and retry bounds (environment overrides exist for tests and slow links)."""

    timeout_s: float = 120.0
    max_retries: int = 3
    backoff_s: float = 1.0
    max_wait_s: float = 60.0  # a retry-after longer than this ends the job with the wait in it

    @classmethod
    def from_env(cls) -> CloudConfig:
        def number(name: str, default: float) -> float:
            try:
                return float(os.environ.get(name, default))
            except ValueError:
                return default

        return cls(
            timeout_s=number("VISIONDESK_CLOUD_TIMEOUT_S", cls.timeout_s),
            max_retries=int(number("VISIONDESK_CLOUD_MAX_RETRIES", cls.max_retries)),
            backoff_s=number("VISIONDESK_CLOUD_BACKOFF_S", cls.backoff_s),
            max_wait_s=number("VISIONDESK_CLOUD_MAX_WAIT_S", cls.max_wait_s),
        )


# --- errors --------------------------------------------------------------------------------------


class CloudError(EngineError):
    """A cloud failure with a stable code; ``retryable`` failures go through the retry loop."""

    def __init__(
        self,
        message: str,
        code: str = ErrorCode.CLOUD_FAILED,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(redact(message), code)
        self.retryable = retryable
        self.retry_after = retry_after


def error_for_status(
    label: str,
    status: int,
    message: str = "",
    kind: str = "",
    retry_after: float | None = None,
    key_hint: str = "Check it in Settings → Providers.",
) -> CloudError:
    """The error for an HTTP status and the provider's error type/message."""
    text = f"{kind} {message}".lower()
    detail = _short(message)
    if status == 401 or "api_key_invalid" in text or "api key not valid" in text:
        # Never echo the provider's text here: some quote part of the key back.
        return CloudError(
            f"{label} rejected the API key (HTTP {status}). {key_hint}",
            c.INVALID_KEY,
        )
    if status == 403:
        return CloudError(
            f"{label} refused access with this key (HTTP 403): {detail}", c.INVALID_KEY
        )
    # Gemini words a per-minute limit as "quota" too; a retry delay tells the two apart.
    out_of_credit = any(
        word in text for word in ("insufficient_quota", "billing", "credit balance")
    )
    if status == 402 or out_of_credit or ("quota" in text and retry_after is None):
        return CloudError(
            f"The {label} account has no quota or credit left: {detail}", c.QUOTA_EXHAUSTED
        )
    if status == 429:
        return CloudError(
            f"{label} is rate-limiting requests: {detail}",
            c.RATE_LIMITED,
            retryable=True,
            retry_after=retry_after,
        )
    if status == 404:
        return CloudError(
            f"{label} does not know that model or path: {detail}", ErrorCode.MODEL_NOT_FOUND
        )
    refusal_words = ("content policy", "content_filter", "safety", "content management")
    if status in (400, 422) and any(word in text for word in refusal_words):
        return CloudError(f"{label} refused this content: {detail}", c.CONTENT_REFUSED)
    if status == 408:
        return CloudError(f"{label} timed out on its side (HTTP 408).", c.TIMEOUT)
    if status >= 500:
        return CloudError(
            f"{label} had a server error (HTTP {status}): {detail}",
            c.SERVER_ERROR,
            retryable=True,
            retry_after=retry_after,
        )
    return CloudError(f"{label} rejected the request (HTTP {status}): {detail}")


def connection_error(label: str, exc: BaseException, timeout_s: float) -> CloudError:
    """A failure below HTTP: a timeout (not retried: it already took long) or no network."""
    if is_timeout(exc):
        return CloudError(
            f"{label} did not answer within {timeout_s:g} s. Try again, or raise the timeout.",
            c.TIMEOUT,
        )
    return CloudError(
        f"Could not reach {label}: the network is down or the address is wrong "
        f"({type(exc).__name__}).",
        c.NETWORK_DOWN,
        retryable=True,
    )


def is_timeout(exc: BaseException) -> bool:
    """httpx, httpx2 and the SDKs all name their timeout classes …Timeout…."""
    seen: BaseException | None = exc
    while seen is not None:
        if any("Timeout" in cls.__name__ for cls in type(seen).__mro__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def malformed(label: str, exc: BaseException | str) -> CloudError:
    what = exc if isinstance(exc, str) else f"{type(exc).__name__}: {_short(str(exc))}"
    return CloudError(
        f"{label} sent a response VisionDesk could not read ({what}).", c.MALFORMED_RESPONSE
    )


# Errors that mean "the response did not look like the provider's format".
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
)
_TRANSPORT_MODULES = frozenset(
    {"httpx", "httpx2", "httpcore", "httpcore2", "h11", "h2", "ssl", "socket", "anyio"}
)


def classify_other(label: str, exc: BaseException, config: CloudConfig) -> CloudError:
    """Failures that are not an HTTP status: transport (timeout, network) or a bad response."""
    module = type(exc).__module__.split(".")[0]
    if is_timeout(exc) or module in _TRANSPORT_MODULES or isinstance(exc, OSError):
        return connection_error(label, exc, config.timeout_s)
    if isinstance(exc, PARSE_ERRORS) or module in ("pydantic", "pydantic_core", "jiter", "json"):
        return malformed(label, exc)
    return CloudError(f"{label} request failed ({type(exc).__name__}: {_short(str(exc))}).")


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        if name == "retry-after":  # an HTTP date, or something we cannot read: no hint then
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (ValueError, TypeError):
                continue
            return max(0.0, parsed.timestamp() - time.time())
    return None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return redact(text if len(text) <= limit else text[: limit - 1] + "…")


# --- retries -------------------------------------------------------------------------------------


def with_retries(
    call: Callable[[], T],
    classify: Callable[[BaseException], CloudError],
    config: CloudConfig,
    *,
    cancelled: CancelCheck,
    started_output: Callable[[], bool],
    on_wait: Callable[[float, CloudError], None] | None = None,
) -> T:
    """Run ``call``; retry rate limits, server errors and dropped connections, a bounded number
    of times, waiting what the provider asked for (``retry-after``) or an exponential backoff.
    Nothing is retried once text has reached the user, so deltas are never repeated."""
    attempt = 0
    while True:
        try:
            return call()
        except CloudError as exc:
            error = exc
        except EngineError:
            raise
        except Exception as exc:
            error = classify(exc)
        if not error.retryable or attempt >= config.max_retries or started_output():
            raise error
        delay = error.retry_after
        if delay is None:
            delay = config.backoff_s * (2**attempt) * random.uniform(0.75, 1.25)
        if delay > config.max_wait_s:
            raise CloudError(
                f"{error.message} It asks to wait {delay:.0f} s; try again later.", error.code
            )
        attempt += 1
        log.info("%s; retry %d of %d in %.2f s", error.code, attempt, config.max_retries, delay)
        if on_wait is not None:
            on_wait(delay, error)
        if _sleep(delay, cancelled):
            raise error


def _sleep(seconds: float, cancelled: CancelCheck) -> bool:
    """Sleep in short slices; True if the job was cancelled meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if cancelled():
            return True
        time.sleep(min(0.05, left))
    return cancelled()


# --- attachments ---------------------------------------------------------------------------------

LOSSLESS_SUFFIXES = frozenset({".png", ".gif", ".bmp", ".tif", ".tiff"})
PDF_DPI = 144  # legible text on A4 within the providers' pixel budgets
MAX_PDF_PAGES = 50


@dataclass(frozen=True)
class Attachment:
    """One image (or a whole PDF, sent natively) ready for a provider: base64 and its type."""

    media_type: str
    data: str  # base64
    name: str
    width: int = 0
    height: int = 0

    @property
    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{self.data}"

    @property
    def is_pdf(self) -> bool:
        return self.media_type == "application/pdf"


def encode_attachments(path: str, max_edge: int, native_pdf: bool = False) -> list[Attachment]:
    """An image file as one attachment; a PDF as one image per page (or natively, as asked)."""
    if Path(path).suffix.lower() == ".pdf":
        if native_pdf:
            return [_native_pdf(Path(path))]
        return [
            _encode_pil(page, f"{Path(path).name}#{i + 1}", max_edge, lossless=True)
            for i, page in enumerate(render_pdf(Path(path)))
        ]
    from engine.documents.images import load_image

    image = load_image(path)  # EXIF-upright RGB, with clear errors for bad files
    lossless = Path(path).suffix.lower() in LOSSLESS_SUFFIXES
    return [_encode_pil(image, Path(path).name, max_edge, lossless)]


def _encode_pil(image: Any, name: str, max_edge: int, lossless: bool) -> Attachment:
    from PIL import Image

    width, height = image.size
    scale = min(1.0, max_edge / max(width, height))
    if scale < 1.0:  # keep the aspect ratio: documents and charts must not be cropped
        image = image.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS
        )
    buffer = io.BytesIO()
    if lossless:
        image.save(buffer, format="PNG", optimize=True)
    if not lossless or buffer.tell() > 4 * 2**20:  # providers cap an image near 5 MB
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        media_type = "image/jpeg"
    else:
        media_type = "image/png"
    return Attachment(
        media_type, base64.b64encode(buffer.getvalue()).decode("ascii"), name, *image.size
    )


def render_pdf(path: Path, dpi: int = PDF_DPI) -> list[Any]:
    """The pages of a PDF as PIL images (pypdfium2), with clear errors for bad files."""
    document = _open_pdf(path)
    try:
        return [page.render(scale=dpi / 72).to_pil().convert("RGB") for page in document]
    finally:
        document.close()


def check_pdf(path: str | Path) -> int:
    """Open a PDF only to check it (before any model work); returns its page count."""
    document = _open_pdf(Path(path))
    try:
        return len(document)
    finally:
        document.close()


def _open_pdf(path: Path) -> Any:
    import pypdfium2 as pdfium

    if not path.is_file():
        raise BadInput(f"PDF not found: {path}")
    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise BadInput(f"{path.name} is not a PDF VisionDesk can read ({exc}).") from exc
    if len(document) > MAX_PDF_PAGES:
        pages = len(document)
        document.close()
        raise BadInput(f"{path.name} has {pages} pages; send at most {MAX_PDF_PAGES} at once.")
    return document


def _native_pdf(path: Path) -> Attachment:
    if not path.is_file():
        raise BadInput(f"PDF not found: {path}")
    data = path.read_bytes()
    if not data.startswith(b"%PDF"):
        raise BadInput(f"{path.name} is not a PDF.")
    return Attachment("application/pdf", base64.b64encode(data).decode("ascii"), path.name)


# --- JSON schemas --------------------------------------------------------------------------------

WRAP_KEY = "value"  # a non-object root schema is wrapped as {"value": …} for the providers


def object_root(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Providers want an object at the root; wrap anything else (``$defs`` move up with it)."""
    if schema.get("type") == "object" or "properties" in schema:
        return schema, False
    inner = {k: v for k, v in schema.items() if k not in ("$defs", "definitions", "$schema")}
    wrapper: dict[str, Any] = {
        "type": "object",
        "properties": {WRAP_KEY: inner},
        "required": [WRAP_KEY],
        "additionalProperties": False,
    }
    for key in ("$defs", "definitions"):
        if key in schema:
            wrapper[key] = schema[key]
    return wrapper, True


_STRICT_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const",
        "anyOf", "$ref", "$defs", "definitions", "description", "title", "pattern", "format",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
        "minItems", "maxItems",
    }
)  # fmt: skip


class NotStrict(ValueError):
    """The schema uses something strict structured output cannot express (e.g. a free-form map)."""


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's strict subset: every property required (optional ones become nullable), no
    additional properties, no unsupported keywords. Raises ``NotStrict`` when impossible."""
    return _strict(copy.deepcopy(schema))


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "oneOf" in node:
        node["anyOf"] = node.pop("oneOf")
    if "allOf" in node or "not" in node or "patternProperties" in node:
        raise NotStrict("allOf/not/patternProperties")
    out: dict[str, Any] = {k: v for k, v in node.items() if k in _STRICT_KEYWORDS}
    for key in ("$defs", "definitions"):
        if key in out:
            out[key] = {name: _strict(sub) for name, sub in out[key].items()}
    if "items" in out:
        out["items"] = _strict(out["items"])
    if "anyOf" in out:
        out["anyOf"] = [_strict(sub) for sub in out["anyOf"]]
    is_object = out.get("type") == "object" or "properties" in out
    if is_object:
        properties = out.get("properties") or {}
        if not properties:
            raise NotStrict("an object without declared properties")
        required = set(out.get("required", []))
        out["properties"] = {
            name: (_strict(sub) if name in required else _nullable(_strict(sub)))
            for name, sub in properties.items()
        }
        out["required"] = list(properties)
        out["additionalProperties"] = False
    return out


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    kind = node.get("type")
    if isinstance(kind, str) and "enum" not in node:
        return {**node, "type": [kind, "null"]}
    if isinstance(kind, list) and "enum" not in node:
        return {**node, "type": [*kind, "null"] if "null" not in kind else kind}
    return {"anyOf": [node, {"type": "null"}]}


_GEMINI_DROP = frozenset({"$schema", "$id", "$comment", "examples", "default", "readOnly"})


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Gemini's ``response_json_schema`` accepts most of JSON Schema; drop what it rejects."""

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {k: clean(v) for k, v in node.items() if k not in _GEMINI_DROP}
        if "oneOf" in out:
            out["anyOf"] = out.pop("oneOf")
        return out

    result: dict[str, Any] = clean(schema)
    return result


def drop_added_nulls(data: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """Remove the ``null`` values strict mode forced into optional properties."""
    root = root or schema
    schema = _resolve(schema, root)
    if isinstance(data, dict) and isinstance(schema.get("properties"), dict):
        required = set(schema.get("required", []))
        properties = schema["properties"]
        return {
            key: drop_added_nulls(value, properties.get(key, {}), root)
            for key, value in data.items()
            if not (value is None and key not in required)
        }
    if isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [drop_added_nulls(item, schema["items"], root) for item in data]
    return data


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def check_schema(schema: dict[str, Any]) -> None:
    """A schema that is not valid JSON Schema is the caller's mistake: ``bad_input``."""
    from jsonschema import SchemaError, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise BadInput(f"The schema is not valid JSON Schema: {exc.message}") from exc


def validate_json(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """Parse ``text`` (tolerating a Markdown code fence) and validate it: (data, problem)."""
    from jsonschema import validators
    from jsonschema.exceptions import best_match

    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    validator = validators.validator_for(schema)(schema)
    error = best_match(validator.iter_errors(data))
    if error is None:
        return data, None
    where = "/".join(str(part) for part in error.absolute_path) or "the top level"
    return data, f"at {where}: {error.message}"


REPAIR_PROMPT = (
    "Your previous answer does not match the required JSON Schema ({problem}). "
    "Answer again with only the corrected JSON."
)


def structured_answer(
    attempt: Callable[[list[ChatMessage]], GenerationResult],
    messages: list[ChatMessage],
    schema: dict[str, Any],
    label: str,
) -> GenerationResult:
    """One schema-mode answer, validated with jsonschema, with one repair retry."""
    first = attempt(messages)
    if first.reason == "cancelled":
        return first
    data, problem = validate_json(first.text, schema)
    if problem is None:
        return replace(first, text=json.dumps(data, ensure_ascii=False))
    log.info("%s answer does not match the schema (%s); asking once to repair it", label, problem)
    repair = [
        *messages,
        ChatMessage(role="assistant", text=first.text),
        ChatMessage(role="user", text=REPAIR_PROMPT.format(problem=problem)),
    ]
    second = attempt(repair)
    total = replace(
        second,
        prompt_tokens=first.prompt_tokens + second.prompt_tokens,
        completion_tokens=first.completion_tokens + second.completion_tokens,
    )
    if second.reason == "cancelled":
        return total
    data, problem = validate_json(second.text, schema)
    if problem is not None:
        hint = " (the answer hit the token limit)" if second.reason == "length" else ""
        raise CloudError(
            f"{label} returned JSON that does not match the schema even after one retry{hint}: "
            f"{problem}",
            c.MALFORMED_RESPONSE,
        )
    return replace(total, text=json.dumps(data, ensure_ascii=False), reason="done")


# --- the shared backend --------------------------------------------------------------------------


@dataclass
class Streamed:
    """What one provider request produced (before validation and retries)."""

    text: str
    reason: str = "done"  # done | length | cancelled
    input_tokens: int = 0
    output_tokens: int = 0
    first_token_at: float | None = None


class CloudBackend:
    """A provider model behind the ``Backend`` interface; subclasses implement the request."""

    name = "cloud"
    provider = "cloud"
    max_image_edge = 2048
    needs_key = True
    key_hint = "Check it in Settings → Providers."

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        key: Key | None = None,
        config: CloudConfig | None = None,
        native_pdf: bool = False,
        on_wait: Callable[[float, CloudError], None] | None = None,
    ) -> None:
        self.config = config or CloudConfig.from_env()
        self.base_url = base_url or None
        self.native_pdf = native_pdf
        self.on_wait = on_wait
        self._sdk_client: Any = None
        self.key = key if key is not None else read_key(self.provider)
        if self.key is None and self.needs_key:
            raise CloudError(missing_key_message(self.provider), c.MISSING_KEY)
        self.model = model or self.default_model()

    @property
    def label(self) -> str:
        return c.PROVIDER_LABELS.get(self.provider, self.provider)

    def default_model(self) -> str:
        return c.DEFAULT_MODELS[self.provider]

    def info(self) -> ModelInfo:
        return ModelInfo(
            model=self.model,
            path=self.base_url or "",
            family=self.provider,
            quant="none",
            device="remote" if self.provider == c.REMOTE else "cloud",
            dtype="",
        )

    def close(self) -> None:
        client, self._sdk_client = self._sdk_client, None
        close = getattr(client, "close", None)
        if close is not None:
            close()
        self.key = None

    def _client(self) -> Any:
        """One SDK client per backend, kept alive while its streams are read."""
        if self._sdk_client is None:
            self._sdk_client = self._make_client()
        return self._sdk_client

    def _make_client(self) -> Any:
        raise NotImplementedError

    # --- to implement --------------------------------------------------------------------------
    def _stream(
        self,
        messages: list[ChatMessage],
        sampling: Sampling,
        on_text: TextSink,
        cancelled: CancelCheck,
        schema: dict[str, Any] | None,
    ) -> Streamed:
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> CloudError:
        raise NotImplementedError

    def list_models(self) -> list[dict[str, str]]:
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------
    def chat(
        self,
        messages: list[ChatMessage],
        sampling: Sampling,
        *,
        on_text: TextSink,
        cancelled: CancelCheck,
        json_schema: dict[str, Any] | None = None,
        image_max_pixels: int | None = None,  # providers scale pictures to their own limits
    ) -> GenerationResult:
        if not messages or messages[-1].role != "user":
            raise BadInput("A chat request must end with a user message.")
        started = time.perf_counter()
        if json_schema is None:
            result = self._attempt(messages, sampling, on_text, cancelled, None, started)
        else:
            check_schema(json_schema)
            result = structured_answer(
                lambda turn: self._attempt(
                    turn, sampling, _ignore, cancelled, json_schema, started
                ),
                messages,
                json_schema,
                self.label,
            )
            if result.reason != "cancelled":
                on_text(result.text)  # one delta: the validated JSON (deltas add up to the text)
        result.seconds = time.perf_counter() - started
        return result

    def _attempt(
        self,
        messages: list[ChatMessage],
        sampling: Sampling,
        on_text: TextSink,
        cancelled: CancelCheck,
        schema: dict[str, Any] | None,
        started: float,
    ) -> GenerationResult:
        emitted = False

        def sink(text: str) -> None:
            nonlocal emitted
            if text:
                emitted = True
                on_text(text)

        try:
            streamed = with_retries(
                lambda: self._stream(messages, sampling, sink, cancelled, schema),
                self._classify_any,
                self.config,
                cancelled=cancelled,
                started_output=lambda: emitted,
                on_wait=self.on_wait,
            )
        except CloudError:
            if cancelled():  # cancelled while waiting to retry: a cancel, not a failure
                return GenerationResult(text="", reason="cancelled")
            raise
        first = streamed.first_token_at
        return GenerationResult(
            text=streamed.text,
            reason=streamed.reason,  # type: ignore[arg-type]
            prompt_tokens=streamed.input_tokens,
            completion_tokens=streamed.output_tokens,
            time_to_first_token_s=(first - started) if first else None,
        )

    def available_models(self, cancelled: CancelCheck = lambda: False) -> list[dict[str, str]]:
        """The provider's model list, with the same error codes and retries as a chat."""
        return with_retries(
            self.list_models,
            self._classify_any,
            self.config,
            cancelled=cancelled,
            started_output=lambda: False,
            on_wait=self.on_wait,
        )

    def _classify_any(self, exc: BaseException) -> CloudError:
        if isinstance(exc, CloudError):
            return exc
        error = self._classify(exc)
        log.info("%s request failed: %s (%s)", self.label, error.code, type(exc).__name__)
        return error

    def attachments(self, message: ChatMessage) -> list[Attachment]:
        if message.images and message.role != "user":
            raise BadInput("Images can only be attached to user messages.")
        return [
            part
            for path in message.images
            for part in encode_attachments(path, self.max_image_edge, self.native_pdf)
        ]


def _ignore(text: str) -> None:
    """Schema mode streams nothing until the JSON is validated."""
