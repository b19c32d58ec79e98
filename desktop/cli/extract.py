"""``visiondesk extract``: files and folders in, schema-valid data out, through the engine.

Each file is one extract job. A file that fails (empty, damaged, encrypted, too many pages, or
one that stops the engine) is reported and the batch goes on; only a model that cannot be used
stops it, since every file would fail the same way. Progress and the summary go to stderr; the
exported data goes to stdout or ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from desktop.cli import backends, exit_codes
from desktop.cli.data_folder import DataFolderError, check, engine_log
from desktop.cli.engine_process import EngineGone, EngineProcess, new_job_id
from desktop.cli.extract_batch import BatchBusy, BatchGone, open_batch, out_problem
from desktop.extraction_queue import (
    BatchStatus,
    ExtractionQueue,
    FileStatus,
    default_path,
    printable,
    utf8_name,
)
from engine import protocol as p
from engine.protocol import cloud as c
from engine.protocol import extract as px

FORMATS = ("json", "jsonl", "csv", "md")
SUFFIXES = frozenset(
    {".pdf", ".png", ".jpg", ".jpeg", ".jfif", ".webp", ".tif", ".tiff", ".gif", ".bmp"}
)
_PAGE_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d*)\s*)?$")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract schema-valid data from documents, scans, screenshots and charts",
        description="Extract data that conforms to a JSON Schema from PDFs and images.",
    )
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="files or folders")
    parser.add_argument(
        "--schema",
        required=True,
        metavar="NAME|PATH",
        help=f"a built-in schema ({', '.join(px.BUILTIN_SCHEMAS)}) or a JSON Schema file",
    )
    parser.add_argument(
        "--model", default=None, help="model folder or Hugging Face repo id (or name a --backend)"
    )
    parser.add_argument(
        "--adapter", default=None, metavar="DIR", help="a LoRA adapter trained with `finetune`"
    )
    parser.add_argument("--pages", default=None, help="pages to read, e.g. 1-3,5,8-")
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from --out, else json"
    )
    parser.add_argument("--out", default=None, metavar="PATH", help="write here instead of stdout")
    passes = parser.add_mutually_exclusive_group()
    passes.add_argument(
        "--two-pass",
        dest="two_pass",
        action="store_true",
        default=True,
        help="transcribe each page first, then extract (default)",
    )
    passes.add_argument(
        "--one-pass", dest="two_pass", action="store_false", help="extract directly"
    )
    parser.add_argument("--quant", choices=["auto", "nf4", "int8", "none"], default="auto")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu", "mps"], default="auto")
    parser.add_argument("--max-pages", type=int, default=None, help="refuse longer documents")
    parser.add_argument("--max-new-tokens", type=int, default=px.ExtractOptions().max_new_tokens)
    parser.add_argument(
        "--max-long-side",
        type=int,
        default=px.ExtractOptions().max_long_side,
        help="pixels on a page's long side",
    )
    parser.add_argument("--replot", default=None, metavar="DIR", help="write chart re-plots here")
    backends.add_backend_arguments(parser)
    backends.add_consent_arguments(parser)
    parser.add_argument(
        "--batch",
        default=None,
        metavar="NAME",
        help="name the batch; running it again goes on where it stopped (default: an "
        "interrupted run of the same inputs and settings is resumed automatically)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="start again: do not resume stored progress"
    )
    parser.add_argument("--verbose", action="store_true", help="show the engine's log")
    parser.set_defaults(run=run)


@dataclass
class Outcome:
    """How one file ended."""

    file: Path
    document: dict[str, Any] | None = None
    error_code: str | None = None
    message: str = ""
    pages: int = 0

    @property
    def ok(self) -> bool:
        return self.document is not None and self.document.get("status") == "ok"


@dataclass
class Batch:
    outcomes: list[Outcome] = field(default_factory=list)
    aborted: str | None = None  # why the batch stopped early (a model problem)
    aborted_code: str | None = None
    export_failed: str | None = None  # why the results could not be written


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def _usage(message: str) -> int:
    print(f"visiondesk: error: {message}", file=sys.stderr)
    return exit_codes.USAGE


def _page_range_problem(spec: str) -> str | None:
    """Why ``--pages`` is not a page range, or None. The engine checks it too, but only once the
    model is loaded and then once per file; a typo is a usage error before any work."""
    for part in spec.split(","):
        match = _PAGE_PART.match(part)
        if not match:
            return f"--pages {spec!r} is not a page range; write it like 1-3,5,8-"
        first, last = int(match.group(1)), match.group(2)
        if first < 1:
            return f"--pages {spec!r}: pages count from 1"
        if last and int(last) < first:
            return f"--pages {spec!r}: {part.strip()!r} runs backwards; write {last}-{first}"
    return None


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    suffix = Path(args.out).suffix.lower().lstrip(".") if args.out else ""
    return {"jsonl": "jsonl", "csv": "csv", "md": "md", "markdown": "md"}.get(suffix, "json")


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[Outcome]]:
    """Files to read (folders searched recursively for supported files) and inputs not found."""
    files: list[Path] = []
    missing: list[Outcome] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(
                f
                for f in path.rglob("*")
                if f.is_file()
                and f.suffix.lower() in SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
            files += [f.resolve() for f in found]
        elif path.exists():
            files.append(path.resolve())
        else:
            missing.append(
                Outcome(path, error_code=p.ErrorCode.BAD_INPUT, message=f"File not found: {path}")
            )
    for file in [f for f in files if not utf8_name(f)]:
        missing.append(  # neither storable in the batch nor sendable to the engine as it is
            Outcome(
                Path(printable(file)),
                error_code=p.ErrorCode.BAD_INPUT,
                message=f"The file name '{printable(file.name)}' is not valid UTF-8; rename the "
                "file to read it",
            )
        )
    return list(dict.fromkeys(f for f in files if utf8_name(f))), missing


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    problem = _page_range_problem(args.pages) if args.pages is not None else None
    if problem:
        return _usage(problem)
    if args.max_pages is not None and args.max_pages < 1:
        return _usage("--max-pages must be at least 1")
    if args.max_new_tokens < 16:
        return _usage("--max-new-tokens must be at least 16")
    if args.max_long_side < 64:
        return _usage("--max-long-side must be at least 64")
    try:
        routing = backends.backend_fields(args)
    except backends.BackendChoiceError as exc:
        return _usage(str(exc))
    if args.model is None and backends.requires_local_model(routing):
        return _usage("--model is required (or name a --backend)")
    problem = out_problem(args.out) if args.out else None
    if problem:
        return _usage(problem)
    schema = args.schema
    if schema not in px.BUILTIN_SCHEMAS:
        if not Path(schema).expanduser().is_file():
            return _usage(
                f"--schema {schema!r} is neither a built-in schema "
                f"({', '.join(px.BUILTIN_SCHEMAS)}) nor a JSON Schema file"
            )
        schema = str(Path(schema).expanduser().resolve())
    files, missing = expand_inputs(args.inputs)
    if not files and not missing:
        print(
            "visiondesk: error: no PDF or image files found in the given folders", file=sys.stderr
        )
        return exit_codes.BAD_INPUT
    model = args.model
    if model and Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    started = time.perf_counter()
    batch = Batch(outcomes=list(missing))
    try:
        queue = ExtractionQueue(default_path(check()))
    except (OSError, sqlite3.Error) as exc:
        raise DataFolderError(exc) from exc
    try:
        return _run_batch(args, queue, batch, files, len(missing), schema, model, routing, started)
    finally:
        queue.close()


@dataclass
class _Engine:
    """The engine process of a batch, restarted when it dies."""

    log_path: Path
    verbose: bool
    process: EngineProcess | None = None

    def start(self) -> EngineProcess:
        if self.process is None:
            self.process = EngineProcess(self.log_path, verbose=self.verbose)
        return self.process

    def restart(self) -> EngineProcess:
        self.close()
        return self.start()

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None


def _run_batch(
    args: argparse.Namespace,
    queue: ExtractionQueue,
    batch: Batch,
    files: list[Path],
    missing: int,
    schema: str,
    model: str | None,
    routing: dict[str, Any],
    started: float,
) -> int:
    settings = _settings(args, schema, model, routing)
    try:
        stored = open_batch(queue, args, settings, files)
    except ValueError as exc:
        return _usage(str(exc))
    except BatchBusy as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    try:
        return _work(args, queue, stored, batch, missing, schema, model, routing, started)
    finally:
        queue.release(stored)


def _work(
    args: argparse.Namespace,
    queue: ExtractionQueue,
    stored: str,
    batch: Batch,
    missing: int,
    schema: str,
    model: str | None,
    routing: dict[str, Any],
    started: float,
) -> int:
    """Read the batch's files left, then export every result; the exit code."""
    engine = _Engine(engine_log(), args.verbose)
    written = None
    try:
        if not _schema_usable(engine.start(), schema):
            return exit_codes.BAD_INPUT
        _read_files(args, queue, stored, engine, batch, schema, model, routing)
        batch.outcomes += _outcomes(queue, stored)
        written = _export(engine.start(), batch, _format(args), args.out)
        if batch.export_failed:
            queue.set_batch_status(stored, BatchStatus.ACTIVE)  # resumed by a re-run, unread
    except KeyboardInterrupt:
        done = queue.progress(stored).finished
        print(
            f"\nvisiondesk: interrupted after {done} of {len(queue.files(stored))} files; run the "
            "same command again to go on where it stopped",
            file=sys.stderr,
        )
        return exit_codes.INTERRUPTED
    except (EngineGone, BatchGone) as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    finally:
        engine.close()
    total = missing + len(queue.files(stored))
    _summary(batch, total, time.perf_counter() - started, written)
    return exit_code(batch)


def _settings(
    args: argparse.Namespace, schema: str, model: str | None, routing: dict[str, Any]
) -> dict[str, Any]:
    """What decides a batch's results: a re-run with the same settings resumes it."""
    schema_file = Path(schema)
    return {
        "inputs": [str(Path(raw).expanduser().resolve()) for raw in args.inputs],
        "schema": schema,
        "schema_sha256": _sha(schema_file) if schema_file.is_file() else None,
        "model": model,
        "quant": args.quant,
        "device": args.device,
        "pages": args.pages,
        "max_pages": args.max_pages,
        "options": msgspec.to_builtins(_options(args)),
        "routing": routing,
        "replot": str(Path(args.replot).expanduser().resolve()) if args.replot else None,
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


MAX_ENGINE_RESTARTS_PER_FILE = 3
# Failures that are not about one file: the model or the cloud account cannot be used at all.
STOPS_THE_BATCH = frozenset(
    {
        *p.MODEL_ERROR_CODES,
        p.ErrorCode.NO_MODEL_LOADED,
        p.ErrorCode.CLOUD_NOT_ALLOWED,
        c.INVALID_KEY,
        c.MISSING_KEY,
        c.QUOTA_EXHAUSTED,
        c.CONSENT_NEEDED,
        c.NETWORK_DOWN,  # the server (or the internet) is unreachable: so for every file
    }
)


def _read_files(
    args: argparse.Namespace,
    queue: ExtractionQueue,
    batch_id: str,
    engine: _Engine,
    batch: Batch,
    schema: str,
    model: str | None,
    routing: dict[str, Any],
) -> None:
    positions = {f.id: i for i, f in enumerate(queue.files(batch_id), 1)}
    while (file := queue.next_file(batch_id)) is not None or queue.batch(batch_id) is None:
        if file is None:
            raise BatchGone("the batch was deleted while it was being read; nothing was exported")
        label = f"[{positions.get(file.id, len(positions))}/{len(positions)}] {file.name}"
        queue.start_file(file.id)
        completed = queue.completed_pages(file.id)
        command = _command(args, file.path, schema, model, routing, completed, file.never_send)
        try:
            outcome = _extract(engine.start(), command, label, queue, file.id)
        except KeyboardInterrupt:
            queue.requeue_file(file.id)  # its finished pages stay stored for the next run
            raise
        except EngineGone as exc:
            engine.restart()
            attempts = (queue.file(file.id) or file).attempts
            if attempts >= MAX_ENGINE_RESTARTS_PER_FILE:
                message = f"{exc} (it stopped {attempts} times on this file)"
                print(f"{label}: failed: {message}", file=sys.stderr, flush=True)
                queue.fail_file(file.id, p.ErrorCode.ENGINE_DIED, message)
            else:
                print(
                    f"{label}: {exc} Restarted it; going on with the pages left.",
                    file=sys.stderr,
                    flush=True,
                )
                queue.requeue_file(file.id)
            continue
        if outcome.error_code in STOPS_THE_BATCH:
            batch.aborted = outcome.message  # every other file would fail the same way
            batch.aborted_code = outcome.error_code
            return
    queue.update_batch_status(batch_id)


def _outcomes(queue: ExtractionQueue, batch_id: str) -> list[Outcome]:
    """How each file of the batch ended, resumed ones included, in batch order."""
    outcomes = []
    for file in queue.files(batch_id):
        outcome = Outcome(file.path, document=file.document, pages=file.pages_done)
        if file.status == FileStatus.FAILED:
            outcome.error_code, outcome.message = file.error_code, file.error
        elif file.status != FileStatus.DONE:
            continue
        elif file.document is not None and file.document.get("status") != "ok":
            outcome.message = _page_failures(file.document)
        outcomes.append(outcome)
    return outcomes


def _options(args: argparse.Namespace) -> px.ExtractOptions:
    return px.ExtractOptions(
        two_pass=args.two_pass,
        max_new_tokens=args.max_new_tokens,
        max_long_side=args.max_long_side,
        max_pixels=max(args.max_long_side * args.max_long_side * 3 // 4, 64 * 64),
    )


def _command(
    args: argparse.Namespace,
    file: Path,
    schema: str,
    model: str | None,
    routing: dict[str, Any],
    completed: list[dict[str, Any]],
    never_send: bool = False,
) -> px.Extract:
    fields = {**routing, "never_send": bool(routing.get("never_send")) or never_send}
    return px.Extract(
        job_id=new_job_id(),
        path=str(file),
        schema=schema,
        model=model,
        quant=args.quant,
        device=args.device,
        page_spec=args.pages,
        max_pages=args.max_pages,
        options=_options(args),
        completed_pages=completed,
        replot_dir=str(Path(args.replot).expanduser().resolve()) if args.replot else None,
        adapter=str(Path(args.adapter).expanduser().resolve()) if args.adapter else None,
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
        **fields,
    )


def _job(engine: EngineProcess, command: Any) -> Iterator[p.Event]:
    """Send a job and yield its events up to and including its ``Finished``."""
    engine.send(command)
    for event in engine.events():
        if getattr(event, "job_id", None) != command.job_id:
            continue
        yield event
        if isinstance(event, p.Finished):
            return


def _finished(engine: EngineProcess, command: Any) -> p.Finished:
    for event in _job(engine, command):
        if isinstance(event, p.Finished):
            return event
    raise EngineGone("The engine ended a job without finishing it.")


def _schema_usable(engine: EngineProcess, schema: str) -> bool:
    """Check the schema once, so a broken schema file is one error, not one per file."""
    finished = _finished(engine, px.CheckSchema(job_id=new_job_id(), schema=schema))
    if finished.reason == "error":
        print(f"visiondesk: error: {finished.message}", file=sys.stderr)
        return False
    return True


def _extract(
    engine: EngineProcess, command: px.Extract, label: str, queue: ExtractionQueue, file_id: int
) -> Outcome:
    """Run one file's job; each page is stored in the queue the moment it arrives."""
    outcome = Outcome(Path(command.path))
    stage = ""
    reading = ""  # the engine's "Page N of M" for the page being read
    kept = len(command.completed_pages)
    if kept:
        print(f"{label}: {kept} page{'s' if kept != 1 else ''} already stored", file=sys.stderr)
    try:
        for event in _job(engine, command):
            if isinstance(event, p.Progress) and event.stage in ("loading", "routing"):
                if event.message != stage:
                    stage = event.message
                    print(f"{label}: {event.message}", file=sys.stderr, flush=True)
            elif isinstance(event, p.Progress) and event.stage == "page" and event.total:
                queue.set_pages_total(file_id, kept + int(event.total))
                reading = event.message
            elif isinstance(event, p.Progress) and event.stage in ("transcribing", "extracting"):
                if event.stage != stage:
                    stage = event.stage
                    where = reading[:1].lower() + reading[1:] if reading else "page"
                    print(f"{label}: {where}: {event.stage}…", file=sys.stderr, flush=True)
            elif isinstance(event, p.PartialResult) and event.data.get("kind") == "page":
                page = px.page_result(event.data)
                queue.store_page(file_id, event.data)
                outcome.pages += 1
                stage = ""
                flagged = sum(issue.severity == "error" for issue in page.issues)
                note = f" ({flagged} issue{'s' if flagged != 1 else ''})" if flagged else ""
                print(f"{label}: page {page.page} {page.status}{note}", file=sys.stderr, flush=True)
            elif isinstance(event, p.Finished):
                return _ended(outcome, event, label, queue, file_id)
    except KeyboardInterrupt:
        engine.send(p.Cancel(job_id=command.job_id))
        raise
    raise EngineGone("The engine ended a job without finishing it.")


def _ended(
    outcome: Outcome, event: p.Finished, label: str, queue: ExtractionQueue, file_id: int
) -> Outcome:
    if event.reason == "error":
        outcome.error_code, outcome.message = event.error_code, event.message
        print(f"{label}: failed: {event.message}", file=sys.stderr, flush=True)
        queue.fail_file(file_id, event.error_code, event.message)
        return outcome
    outcome.document = event.result
    status = (event.result or {}).get("status", "failed")
    print(f"{label}: {status}", file=sys.stderr, flush=True)
    if event.reason == "cancelled":
        queue.requeue_file(file_id)
    else:
        queue.finish_file(file_id, event.result or {})
    if status != "ok":
        outcome.message = _page_failures(event.result or {})
    return outcome


def _page_failures(document: dict[str, Any]) -> str:
    pages = document.get("pages") or []
    reasons = [
        f"page {pg.get('page')}: {pg.get('error') or pg.get('status')}"
        for pg in pages
        if pg.get("status") != "ok"
    ]
    return "; ".join(reasons) or "no page could be read"


def _export(engine: EngineProcess, batch: Batch, fmt: str, out: str | None) -> str | None:
    documents = [o.document for o in batch.outcomes if o.document is not None]
    if not documents and out is None:
        return None
    command = px.ExportResults(
        job_id=new_job_id(),
        documents=documents,
        format=fmt,  # type: ignore[arg-type]
        out_path=str(Path(out).expanduser().resolve()) if out else None,
    )
    finished = _finished(engine, command)
    if finished.reason == "error":
        batch.export_failed = finished.message
        return None
    result = finished.result or {}
    if out is None:
        sys.stdout.write(str(result.get("text", "")))
        sys.stdout.flush()
        return None
    return str(result.get("path"))


def _summary(batch: Batch, total: int, seconds: float, written: str | None) -> None:
    good = [o for o in batch.outcomes if o.ok]
    pages = sum(len((o.document or {}).get("pages") or []) for o in good)
    lines = [
        f"Extracted {len(good)} of {total} file{'s' if total != 1 else ''} ({pages} page{'s' if pages != 1 else ''}) in {seconds:.1f} s."
    ]
    if written:
        lines.append(f"Wrote {written}.")
    failed = [o for o in batch.outcomes if not o.ok]
    if failed:
        lines.append("Failed:")
        lines += [f"  {o.file.name}: {o.message or 'no valid result'}" for o in failed]
    if batch.aborted:
        lines.append(f"Stopped early: {exit_codes.explained(batch.aborted_code, batch.aborted)}")
    if batch.export_failed:
        lines.append(
            f"visiondesk: error: {batch.export_failed} The results are stored: the same command "
            "with another --out writes them without reading the files again."
        )
    print("\n".join(lines), file=sys.stderr)


def exit_code(batch: Batch) -> int:
    """0 all good; 4 the model (5 the cloud backend) could not be used; 3 only bad input files
    failed; 5 the cloud backend failed on files (besides bad inputs); 1 otherwise, such as
    results that could not be written."""
    if batch.aborted:
        code = exit_codes.for_error(batch.aborted_code)
        return code if code != exit_codes.FAILED else exit_codes.MODEL_PROBLEM
    if batch.export_failed:
        return exit_codes.FAILED
    codes = {exit_codes.for_error(o.error_code) for o in batch.outcomes if not o.ok}
    if not codes:
        return exit_codes.OK
    if codes == {exit_codes.BAD_INPUT}:
        return exit_codes.BAD_INPUT
    if codes <= {exit_codes.BAD_INPUT, exit_codes.CLOUD_FAILURE}:
        return exit_codes.CLOUD_FAILURE
    return exit_codes.FAILED
