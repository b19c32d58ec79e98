"""``visiondesk extract``: files and folders in, schema-valid data out, through the engine.

Each file is one extract job. A file that fails (empty, damaged, encrypted, too many pages, or
one that stops the engine) is reported and the batch goes on; only a model that cannot be used
stops it, since every file would fail the same way. Progress and the summary go to stderr; the
exported data goes to stdout or ``--out``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop.cli import exit_codes
from desktop.cli.engine_process import EngineGone, EngineProcess, new_job_id
from desktop.paths import data_dir
from engine import protocol as p
from engine.protocol import extract as px

FORMATS = ("json", "jsonl", "csv", "md")
SUFFIXES = frozenset(
    {".pdf", ".png", ".jpg", ".jpeg", ".jfif", ".webp", ".tif", ".tiff", ".gif", ".bmp"}
)
_PAGES = re.compile(r"^\s*\d+\s*(-\s*\d*\s*)?(,\s*\d+\s*(-\s*\d*\s*)?)*$")


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
    parser.add_argument("--model", required=True, help="model folder or Hugging Face repo id")
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


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def _usage(message: str) -> int:
    print(f"visiondesk: error: {message}", file=sys.stderr)
    return exit_codes.USAGE


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
    return list(dict.fromkeys(files)), missing


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if args.pages is not None and not _PAGES.match(args.pages):
        return _usage(f"--pages {args.pages!r} is not a page range; write it like 1-3,5,8-")
    if args.max_pages is not None and args.max_pages < 1:
        return _usage("--max-pages must be at least 1")
    if args.max_new_tokens < 16:
        return _usage("--max-new-tokens must be at least 16")
    if args.max_long_side < 64:
        return _usage("--max-long-side must be at least 64")
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
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    started = time.perf_counter()
    batch = Batch(outcomes=list(missing))
    log_path = data_dir() / "logs" / "engine.log"
    try:
        engine = EngineProcess(log_path, verbose=args.verbose)
    except EngineGone as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    try:
        if not _schema_usable(engine, schema):
            return exit_codes.BAD_INPUT
        for index, file in enumerate(files, 1):
            command = _command(args, file, schema, model)
            try:
                outcome = _extract(engine, command, f"[{index}/{len(files)}] {file.name}")
            except EngineGone as exc:
                outcome = Outcome(file, error_code=p.ErrorCode.ENGINE_DIED, message=str(exc))
                engine.close()
                engine = EngineProcess(log_path, verbose=args.verbose)  # go on with the next file
            batch.outcomes.append(outcome)
            if (
                outcome.error_code in p.MODEL_ERROR_CODES
                or outcome.error_code == p.ErrorCode.NO_MODEL_LOADED
            ):
                batch.aborted = outcome.message
                break
        written = _export(engine, batch, _format(args), args.out)
    except KeyboardInterrupt:
        print("\nvisiondesk: cancelled", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except EngineGone as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    finally:
        engine.close()
    _summary(batch, len(files) + len(missing), time.perf_counter() - started, written)
    return exit_code(batch)


def _command(args: argparse.Namespace, file: Path, schema: str, model: str) -> px.Extract:
    options = px.ExtractOptions(
        two_pass=args.two_pass,
        max_new_tokens=args.max_new_tokens,
        max_long_side=args.max_long_side,
        max_pixels=max(args.max_long_side * args.max_long_side * 3 // 4, 64 * 64),
    )
    return px.Extract(
        job_id=new_job_id(),
        path=str(file),
        schema=schema,
        model=model,
        quant=args.quant,
        device=args.device,
        page_spec=args.pages,
        max_pages=args.max_pages,
        options=options,
        replot_dir=str(Path(args.replot).expanduser().resolve()) if args.replot else None,
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


def _extract(engine: EngineProcess, command: px.Extract, label: str) -> Outcome:
    outcome = Outcome(Path(command.path))
    stage = ""
    try:
        for event in _job(engine, command):
            if (
                isinstance(event, p.Progress)
                and event.stage == "loading"
                and event.message != stage
            ):
                stage = event.message
                print(f"{label}: {event.message}", file=sys.stderr, flush=True)
            elif isinstance(event, p.Progress) and event.stage in ("transcribing", "extracting"):
                if event.stage != stage:
                    stage = event.stage
                    print(
                        f"{label}: page {outcome.pages + 1}: {event.stage}…",
                        file=sys.stderr,
                        flush=True,
                    )
            elif isinstance(event, p.PartialResult):
                page = px.page_result(event.data)
                outcome.pages += 1
                stage = ""
                flagged = sum(issue.severity == "error" for issue in page.issues)
                note = f" ({flagged} issue{'s' if flagged != 1 else ''})" if flagged else ""
                print(f"{label}: page {page.page} {page.status}{note}", file=sys.stderr, flush=True)
            elif isinstance(event, p.Finished):
                return _ended(outcome, event, label)
    except KeyboardInterrupt:
        engine.send(p.Cancel(job_id=command.job_id))
        raise
    raise EngineGone("The engine ended a job without finishing it.")


def _ended(outcome: Outcome, event: p.Finished, label: str) -> Outcome:
    if event.reason == "error":
        outcome.error_code, outcome.message = event.error_code, event.message
        print(f"{label}: failed: {event.message}", file=sys.stderr, flush=True)
        return outcome
    outcome.document = event.result
    status = (event.result or {}).get("status", "failed")
    print(f"{label}: {status}", file=sys.stderr, flush=True)
    if status != "ok":
        pages = (event.result or {}).get("pages") or []
        reasons = [
            f"page {pg.get('page')}: {pg.get('error') or pg.get('status')}"
            for pg in pages
            if pg.get("status") != "ok"
        ]
        outcome.message = "; ".join(reasons) or "no page could be read"
    return outcome


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
        batch.outcomes.append(
            Outcome(Path(out or "-"), error_code=finished.error_code, message=finished.message)
        )
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
        lines.append(f"Stopped early: {batch.aborted}")
    print("\n".join(lines), file=sys.stderr)


def exit_code(batch: Batch) -> int:
    """0 all good; 4 the model could not be used; 3 only bad input files failed; 1 otherwise."""
    if batch.aborted:
        return exit_codes.MODEL_PROBLEM
    failed = [o for o in batch.outcomes if not o.ok]
    if not failed:
        return exit_codes.OK
    if all(o.error_code == p.ErrorCode.BAD_INPUT for o in failed):
        return exit_codes.BAD_INPUT
    return exit_codes.FAILED
