"""Messages of the extract capability (commands and events), added to the unions by the package.

An ``Extract`` job reads one file. It reports each finished page as a ``PartialResult`` whose
``data`` is a ``PageResult`` (decode it with ``msgspec.convert(event.data, PageResult)``) and
ends with a ``Finished`` whose ``result`` is a ``DocumentResult``: every page of this job plus
any ``completed_pages`` the client sent back, merged deterministically. A client that stores each
page as it arrives can therefore resume a batch after a crash by resubmitting only the missing
pages (``pages=[…]``) with the stored ones in ``completed_pages``: nothing is extracted twice.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from engine.protocol.base import Command, DeviceChoice, Event, Quantization  # noqa: F401

ExportFormat = Literal["json", "jsonl", "csv", "md"]
PageStatus = Literal["ok", "invalid", "failed"]
BUILTIN_SCHEMAS = ("invoice", "receipt", "table", "chart", "form", "key_values")


# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------


class ExtractOptions(msgspec.Struct, forbid_unknown_fields=False):
    """How pages are read. The defaults suit a 7B model on a GPU."""

    two_pass: bool = True  # free transcription first, then the schema-constrained pass
    max_new_tokens: int = 1536  # for the JSON answer
    transcription_max_new_tokens: int = 1024
    max_long_side: int = 1536  # pixels on a page's long side
    max_pixels: int = 1536 * 1152  # pixels per page (or per tile)
    use_text_layer: bool = True  # give the PDF's own text to the model and check numbers in it
    checks: bool = True
    retry: bool = True  # one retry at a different setting when a page fails or a check does
    temperature: float = 0.0
    seed: int | None = 0


class Issue(msgspec.Struct, forbid_unknown_fields=False):
    """Something wrong with one field (``path`` is a JSON pointer; "" is the whole page)."""

    path: str
    check: str  # schema, arithmetic, shares, text_layer, length, merge, retry, replot
    message: str
    severity: Literal["error", "warning"] = "error"


class Provenance(msgspec.Struct, forbid_unknown_fields=False):
    """Where a page result came from, so it can be traced and reproduced."""

    file: str
    sha256: str
    page: int
    backend: str
    model: str
    quant: str
    device: str
    prompt_version: str
    schema_name: str
    schema_version: str
    two_pass: bool
    attempts: int
    engine_version: str
    dpi: float | None = None
    image_size: list[int] = msgspec.field(default_factory=list)  # the page's [width, height]
    tiles: int = 1
    text_layer: bool = False
    timings: dict[str, float] = msgspec.field(default_factory=dict)  # seconds per stage
    tokens: dict[str, int] = msgspec.field(default_factory=dict)
    finish_reasons: list[str] = msgspec.field(default_factory=list)  # one per generation
    pixel_budget: list[int] = msgspec.field(default_factory=list)  # [long side, max pixels]
    why: str = ""  # why this backend answered (the routing policy's reason)
    adapter: str = ""  # the LoRA adapter over ``model``, if one was used


class PageResult(msgspec.Struct, forbid_unknown_fields=False):
    """One page's answer. ``status`` ok: valid for the schema (issues may remain, see there);
    invalid: the best answer still breaks the schema; failed: no answer (see ``error``)."""

    page: int
    status: PageStatus
    data: Any = None
    issues: list[Issue] = msgspec.field(default_factory=list)
    provenance: Provenance | None = None
    transcription: str = ""
    error: str = ""
    replot: str | None = None  # a PNG of the original chart beside the extracted series
    kind: Literal["page"] = "page"


class DocumentResult(msgspec.Struct, forbid_unknown_fields=False):
    """One file's answer: its pages and their deterministic merge."""

    file: str
    sha256: str
    schema_name: str
    schema_version: str
    status: Literal["ok", "partial", "failed"]  # partial: some pages are not ok
    data: Any = None  # the merged pages (None if no page is ok)
    pages: list[PageResult] = msgspec.field(default_factory=list)
    issues: list[Issue] = msgspec.field(default_factory=list)  # merge and whole-document issues
    page_count: int = 0  # pages in the file
    format: str = ""
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


class Extract(Command, tag="extract"):
    """Read one file's pages into data that conforms to a JSON Schema."""

    job_id: str
    path: str
    schema: str = "key_values"  # a built-in name or the path of a JSON Schema file
    schema_json: dict[str, Any] | None = None  # an inline schema; wins over ``schema``
    model: str | None = None  # loaded first if set and not resident
    quant: Quantization = "auto"
    device: DeviceChoice = "auto"
    pages: list[int] | None = None  # 1-based; all must exist
    page_spec: str | None = None  # "1-3,5,8-", clipped to the document; ``pages`` wins
    max_pages: int | None = None  # refuse a file with more pages to read than this
    options: ExtractOptions = msgspec.field(default_factory=ExtractOptions)
    completed_pages: list[dict[str, Any]] = msgspec.field(default_factory=list)  # PageResults
    replot_dir: str | None = None  # write chart re-plots (PNG) here
    # Routing, as on ``Chat`` (see engine.routing): who reads the pages, and whether this
    # document may leave the machine at all.
    backend: str | None = None  # local | anthropic | openai | gemini | remote
    backend_model: str | None = None  # the provider's model id; None = its default
    base_url: str | None = None  # the remote server's URL, or a provider endpoint override
    policy: str | None = None  # local_only (default) | local_then_ask | local_then_cloud | …
    never_send: bool = False  # this document must never leave the machine
    adapter: str | None = None  # a LoRA adapter folder over ``model`` (as on ``Chat``)
    allow_pickle: bool = False  # consent to ``model``'s pickle weights (as on ``LoadModel``)
    trust_remote_code: bool = False  # consent to ``model``'s own Python code


class InspectDocument(Command, tag="inspect_document"):
    """Result: ``{"file", "kind", "format", "page_count", "sha256", "size_bytes"}``."""

    job_id: str
    path: str


class RenderPages(Command, tag="render_pages"):
    """Write page images (thumbnails or previews) as PNG files into ``out_dir``.

    Result: ``{"pages": [{"page", "path", "width", "height"}]}``.
    """

    job_id: str
    path: str
    out_dir: str
    pages: list[int] | None = None  # these pages, each of which must exist…
    page_spec: str | None = None  # …or a range such as "1-4", clipped to the document
    max_long_side: int = 256


class ListSchemas(Command, tag="list_schemas"):
    """Result: ``{"schemas": [{"name", "title", "version", "schema"}]}`` (the built-in ones)."""

    job_id: str


class CheckSchema(Command, tag="check_schema"):
    """Load and check a schema (a built-in name, a file, or inline) before using it.

    Result: ``{"name", "title", "version", "schema"}``; a broken schema fails with bad_input.
    """

    job_id: str
    schema: str = "key_values"
    schema_json: dict[str, Any] | None = None


class ExportResults(Command, tag="export_results"):
    """Format ``DocumentResult`` dicts as JSON, JSON Lines, CSV or Markdown.

    Result: ``{"text"}``, or ``{"path", "bytes"}`` when ``out_path`` is set (the file is written).
    """

    job_id: str
    documents: list[dict[str, Any]]
    format: ExportFormat = "json"
    out_path: str | None = None


FieldType = Literal["text", "number", "integer", "date", "boolean", "text_list"]


class FieldSpec(msgspec.Struct):
    """One field of a schema built from names and types (the GUI's schema builder)."""

    name: str
    type: FieldType = "text"
    description: str = ""


_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "text": {"type": ["string", "null"], "maxLength": 400},
    "number": {"type": ["number", "null"]},
    "integer": {"type": ["integer", "null"]},
    "date": {"type": ["string", "null"], "maxLength": 32, "description": "YYYY-MM-DD if clear"},
    "boolean": {"type": ["boolean", "null"]},
    "text_list": {"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 200}},
}


def schema_from_fields(fields: list[FieldSpec], title: str = "Custom") -> dict[str, Any]:
    """A JSON Schema with one property per field; each may be null when not on the page."""
    names = [field.name.strip() for field in fields]
    if not names or any(not name for name in names):
        raise ValueError("Every field needs a name.")
    if len(set(names)) != len(names):
        raise ValueError("Field names must be different from each other.")
    properties: dict[str, Any] = {}
    for name, field in zip(names, fields, strict=True):
        schema = dict(_FIELD_SCHEMAS[field.type])
        if field.description:
            schema["description"] = field.description
        properties[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": properties,
        "required": names,
        "additionalProperties": False,
    }


def page_result(data: dict[str, Any]) -> PageResult:
    """Decode a ``PartialResult.data`` of an extract job."""
    return msgspec.convert(data, PageResult)


def document_result(data: dict[str, Any]) -> DocumentResult:
    """Decode the ``Finished.result`` of an extract job."""
    return msgspec.convert(data, DocumentResult)
