"""Extract: files in, schema-valid data out, page by page; plus inspect, thumbnails and export.

Every failure of the file itself (empty, not a PDF, encrypted, damaged, a decompression bomb,
too many pages) is a ``BadInput`` raised before the model is loaded, so a bad file in a batch
costs nothing and the engine goes on with the next one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from engine import protocol as p
from engine.core import Job
from engine.documents import pages as documents
from engine.errors import BadInput, EngineError
from engine.protocol import extract as px
from engine.routing import plan_route, run_routed
from engine.runtime import LoadSpec, Runtime


def register_handlers(register: Callable[[type, Callable[..., Any]], None]) -> None:
    register(px.Extract, run_extract)
    register(px.InspectDocument, run_inspect)
    register(px.RenderPages, run_render_pages)
    register(px.ListSchemas, run_list_schemas)
    register(px.CheckSchema, run_check_schema)
    register(px.ExportResults, run_export)


# ---------------------------------------------------------------------------------------------
# Extract
# ---------------------------------------------------------------------------------------------


def run_extract(
    job: Job, command: px.Extract, runtime: Runtime
) -> dict[str, Any] | tuple[p.FinishReason, dict[str, Any]]:
    from engine.extraction.pipeline import document_result
    from engine.extraction.schemas import resolve_schema

    started = time.perf_counter()
    plan = plan_route(command)  # a policy contradiction fails at once, before any work
    options = command.options
    _check_options(options)
    schema = resolve_schema(command.schema, command.schema_json)
    held = _decoded_pages(command.completed_pages)
    if command.pages and set(command.pages) <= {page.page for page in held}:
        return _merge_held(command.path, command.pages, schema, held, started)
    job.progress("reading", message=f"Reading {Path(command.path).name}")
    info = documents.inspect(command.path)
    numbers = documents.select_pages(info, command.pages, command.page_spec, command.max_pages)
    done = _completed_pages(held, info, numbers)
    results = list(done)
    if not [number for number in numbers if number not in {page.page for page in done}]:
        return msgspec.to_builtins(
            document_result(info, schema, results, time.perf_counter() - started)
        )
    cancelled = run_routed(
        job,
        command,
        runtime,
        plan=plan,
        local=lambda why: _read_pages(
            job, command, runtime, _backend(job, command, runtime), schema, info, results, why
        ),
        cloud=lambda backend, why: _read_pages(
            job, command, runtime, backend, schema, info, results, why
        ),
    )
    document = document_result(info, schema, results, time.perf_counter() - started)
    if len(results) < len(numbers) and document.status == "ok":
        document.status = "partial"  # cancelled: pages were left unread
    payload: dict[str, Any] = msgspec.to_builtins(document)
    return ("cancelled", payload) if cancelled or job.cancelled else payload


def _merge_held(
    path: str, numbers: list[int], schema: Any, held: list[px.PageResult], started: float
) -> dict[str, Any]:
    """Every page asked for is one the client holds (it merges again after the user's edit).

    Merging needs nothing from the file, so it is not opened: pages of a file that was moved
    or changed since it was read still merge. What only the file could say (its page count and
    format) is left empty; the pages' provenance names the version they were read from.
    """
    from engine.extraction.pipeline import document_result

    pages: list[px.PageResult] = []
    for page in held:
        if page.page in numbers and page.page not in {seen.page for seen in pages}:
            pages.append(page)
    sha256 = next((page.provenance.sha256 for page in pages if page.provenance), "")
    info = documents.DocumentInfo(
        path=Path(path), kind="", format="", page_count=0, sha256=sha256, size_bytes=0
    )
    return msgspec.to_builtins(document_result(info, schema, pages, time.perf_counter() - started))


def _read_pages(
    job: Job,
    command: px.Extract,
    runtime: Runtime,
    backend: Any,
    schema: Any,
    info: documents.DocumentInfo,
    results: list[px.PageResult],
    why: str,
) -> bool:
    """Read the chosen pages not in ``results`` yet, appending each; True if cancelled.

    A fallback to the cloud after a local failure calls this again with the same ``results``,
    so the pages the local model already finished are neither read nor reported twice.
    """
    numbers = documents.select_pages(info, command.pages, command.page_spec, command.max_pages)
    left = [number for number in numbers if number not in {page.page for page in results}]
    runtime.busy(True)
    try:
        return _read_into(job, command, backend, schema, info, left, results, why)
    finally:
        runtime.busy(False)


def _read_into(
    job: Job,
    command: px.Extract,
    backend: Any,
    schema: Any,
    info: documents.DocumentInfo,
    left: list[int],
    results: list[px.PageResult],
    why: str,
) -> bool:
    from engine.extraction.pipeline import ExtractionCancelled, PagePipeline

    options = command.options
    budget = documents.PixelBudget(long_side=options.max_long_side, max_pixels=options.max_pixels)
    cancelled = False
    with tempfile.TemporaryDirectory(prefix="visiondesk-extract-") as work:
        pipeline = PagePipeline(
            backend,
            schema,
            options,
            info,
            Path(work),
            cancelled=lambda: job.cancelled,
            on_stage=lambda stage: job.progress(stage, message=f"{stage.capitalize()}…"),
        )
        for position, number in enumerate(left):
            if job.cancelled:
                cancelled = True
                break
            job.progress("page", position, len(left), f"Page {number} of {info.page_count}")
            try:
                result = _one_page(pipeline, info, number, budget, command.replot_dir)
            except ExtractionCancelled:
                cancelled = True
                break
            if result.provenance is not None:
                result.provenance.why = why
            job.partial(msgspec.to_builtins(result))
            results.append(result)
        job.progress("page", len(left), len(left), "Merging pages")
    return cancelled


def _one_page(
    pipeline: Any,
    info: documents.DocumentInfo,
    number: int,
    budget: documents.PixelBudget,
    replot_dir: str | None,
) -> px.PageResult:
    from engine.extraction.pipeline import failed_page

    began = time.perf_counter()
    try:
        page = documents.load_page(info, number, budget)
    except BadInput as exc:
        if info.page_count == 1:
            raise  # the file itself is bad: the job fails with this message
        return failed_page(number, exc.message)  # one damaged page of many: the rest go on
    result: px.PageResult = pipeline.run(page, time.perf_counter() - began)
    if replot_dir and result.status == "ok":
        _replot(result, page, info, Path(replot_dir))
    return result


def _replot(
    result: px.PageResult, page: documents.Page, info: documents.DocumentInfo, folder: Path
) -> None:
    from engine.extraction.replot import has_series, render_replot

    if not has_series(result.data):
        return
    out = folder / f"{info.path.stem}-page{page.number}-replot.png"
    try:
        result.replot = str(render_replot(page.image, result.data, out))
    except EngineError as exc:  # matplotlib missing: the data is still good
        result.issues.append(px.Issue("", "replot", exc.message, "warning"))


def _check_options(options: px.ExtractOptions) -> None:
    if options.max_new_tokens < 16 or options.transcription_max_new_tokens < 1:
        raise BadInput(
            "The token limits must be at least 16 for the answer and 1 for the transcription."
        )
    if options.max_long_side < 64 or options.max_pixels < 64 * 64:
        raise BadInput("The pixel budget must allow at least 64 pixels on the long side.")


def _decoded_pages(stored: list[dict[str, Any]]) -> list[px.PageResult]:
    """The ``completed_pages`` a client sent back, as page results."""
    pages = []
    for data in stored:
        try:
            pages.append(px.page_result(data))
        except msgspec.ValidationError as exc:
            raise BadInput(f"A completed page is not a page result: {exc}") from exc
    return pages


def _completed_pages(
    held: list[px.PageResult], info: documents.DocumentInfo, numbers: list[int]
) -> list[px.PageResult]:
    """Pages a client already holds, checked to belong to this very file."""
    pages: list[px.PageResult] = []
    for page in held:
        if page.provenance is not None and page.provenance.sha256 != info.sha256:
            raise BadInput(
                f"Completed page {page.page} was read from a different version of "
                f"{info.path.name} (its content changed); extract the file again."
            )
        if page.page in numbers and page.page not in {p.page for p in pages}:
            pages.append(page)
    return pages


def _backend(job: Job, command: px.Extract, runtime: Runtime) -> Any:
    if command.model:
        spec = LoadSpec(
            model=command.model,
            quant=command.quant,
            device=command.device,
            allow_pickle=command.allow_pickle,
            trust_remote_code=command.trust_remote_code,
            adapter=command.adapter,
        )
        return runtime.ensure_loaded(spec, lambda message: job.progress("loading", message=message))
    return runtime.require_backend()


# ---------------------------------------------------------------------------------------------
# Inspect, thumbnails, schemas, export
# ---------------------------------------------------------------------------------------------


def run_inspect(job: Job, command: px.InspectDocument, runtime: Runtime) -> dict[str, Any]:
    info = documents.inspect(command.path)
    return {
        "file": str(info.path),
        "kind": info.kind,
        "format": info.format,
        "page_count": info.page_count,
        "sha256": info.sha256,
        "size_bytes": info.size_bytes,
    }


def run_render_pages(job: Job, command: px.RenderPages, runtime: Runtime) -> dict[str, Any]:
    info = documents.inspect(command.path)
    numbers = documents.select_pages(info, command.pages, spec=command.page_spec)
    folder = Path(command.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    side = max(16, command.max_long_side)
    budget = documents.PixelBudget(long_side=side, max_pixels=side * side, tile_aspect=1e9)
    written = []
    for position, number in enumerate(numbers):
        if job.cancelled:
            break
        job.progress("rendering", position, len(numbers), f"Page {number}")
        page = documents.load_page(info, number, budget)
        path = folder / f"{info.sha256[:16]}-p{number}-{side}.png"
        page.image.save(path, format="PNG")
        written.append(
            {
                "page": number,
                "path": str(path),
                "width": page.image.width,
                "height": page.image.height,
            }
        )
    return {"file": str(info.path), "page_count": info.page_count, "pages": written}


def run_list_schemas(job: Job, command: px.ListSchemas, runtime: Runtime) -> dict[str, Any]:
    from engine.extraction.schemas import builtin_schemas

    return {
        "schemas": [
            {"name": s.name, "title": s.title, "version": s.version, "schema": s.schema}
            for s in builtin_schemas()
        ]
    }


def run_check_schema(job: Job, command: px.CheckSchema, runtime: Runtime) -> dict[str, Any]:
    from engine.extraction.schemas import resolve_schema

    schema = resolve_schema(command.schema, command.schema_json)
    return {
        "name": schema.name,
        "title": schema.title,
        "version": schema.version,
        "schema": schema.schema,
    }


def run_export(job: Job, command: px.ExportResults, runtime: Runtime) -> dict[str, Any]:
    from engine.extraction import exports

    if command.out_path:
        path = Path(command.out_path).expanduser()
        try:
            size = exports.write_export(command.documents, command.format, path)
        except OSError as exc:
            raise BadInput(f"Could not write {path}: {exc.strerror or exc}.") from exc
        return {"path": str(path), "bytes": size, "format": command.format}
    return {"text": exports.export(command.documents, command.format), "format": command.format}
