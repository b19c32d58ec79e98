"""``visiondesk search index|query|status|tag|forget``: image search from the terminal."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from desktop.cli import exit_codes
from desktop.cli.engine_process import new_job_id, run_one_job
from desktop.extraction_queue import printable, utf8_name
from desktop.paths import data_dir
from engine import protocol as p
from engine.protocol import search as ps


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="search your image folders by meaning")
    commands = parser.add_subparsers(dest="search_command", required=True)

    index = commands.add_parser("index", help="index folders (only new or changed files)")
    index.add_argument("folders", nargs="*", metavar="FOLDER", help="default: every indexed one")
    index.add_argument("--model", required=True, help="CLIP/SigLIP folder or Hugging Face id")
    index.add_argument("--all-pages", action="store_true", help="every PDF page, not the first")
    index.add_argument("--workers", type=int, default=0, help="decode processes (0 = auto)")
    index.add_argument("--batch-size", type=int, default=32)
    _model_options(index)
    index.set_defaults(run=run_index)

    query = commands.add_parser("query", help="find images by text, by image, or both")
    query.add_argument("text", nargs="?", default="", help="what to look for")
    query.add_argument("--image", default=None, metavar="IMG", help="find images like this one")
    query.add_argument("--top", type=int, default=20, metavar="K")
    query.add_argument("--tag", action="append", default=[], help="only images with this tag")
    query.add_argument("--folder", action="append", default=[], help="only under this folder")
    query.add_argument("--model", default=None, help="default: the model used last")
    query.add_argument("--text-weight", type=float, default=0.5, help="image + text: 0..1")
    query.add_argument("--exact", action="store_true", help="exact search even when large")
    _model_options(query)
    query.set_defaults(run=run_query)

    status = commands.add_parser("status", help="folders, models, counts and skipped files")
    status.add_argument("--json", action="store_true")
    status.add_argument("--skipped", type=int, default=50, help="skipped files to list")
    status.set_defaults(run=run_status)

    tag = commands.add_parser("tag", help="zero-shot tags: score every image against labels")
    tag.add_argument("labels", nargs="+", metavar="LABEL")
    tag.add_argument("--model", default=None, help="default: the model used last")
    tag.add_argument("--template", action="append", default=[], help='e.g. "a photo of a {}."')
    tag.add_argument("--threshold", type=float, default=None, help="probability for a tag")
    _model_options(tag)
    tag.set_defaults(run=run_tag)

    forget = commands.add_parser("forget", help="remove folders from the index (not from disk)")
    forget.add_argument("folders", nargs="+", metavar="FOLDER")
    forget.add_argument("--json", action="store_true")
    forget.set_defaults(run=run_forget)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quant", choices=["nf4", "int8", "none"], default="none")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu", "mps"], default="auto")
    parser.add_argument("--json", action="store_true", help="JSON output")


# --- commands ----------------------------------------------------------------------------------


def run_index(args: argparse.Namespace) -> int:
    folders = [str(Path(folder).expanduser().resolve()) for folder in args.folders]
    for folder in folders:
        if not utf8_name(folder):  # the index stores, and the engine is sent, UTF-8 text
            return _error(
                f"the folder name '{printable(folder)}' is not valid UTF-8; rename it to index it",
                exit_codes.BAD_INPUT,
            )
        if not Path(folder).is_dir():
            return _error(f"folder not found: {folder}", exit_codes.BAD_INPUT)
    if args.batch_size < 1 or args.workers < 0:
        return _error("--batch-size must be at least 1 and --workers not negative")
    command = ps.IndexFolders(
        job_id=new_job_id(),
        data_dir=str(data_dir()),
        model=_model_arg(args.model),
        folders=folders,
        pdf_pages="all" if args.all_pages else "first",
        workers=args.workers,
        batch_size=args.batch_size,
        quant=args.quant,
        device=args.device,
    )
    line = _ProgressLine()
    finished = run_one_job(
        command, None if args.json else line.show, "run the same command to resume"
    )
    line.clear()
    if finished is None or finished.reason == "error":
        return _failed(finished)
    result = finished.result or {}
    if args.json:
        print(json.dumps({"reason": finished.reason, **result}))
        return exit_codes.OK if finished.reason == "done" else exit_codes.INTERRUPTED
    print(
        f"{result.get('found', 0)} files: {result.get('embedded', 0)} embedded, "
        f"{result.get('reused', 0)} recognised (renamed, copied or touched), "
        f"{result.get('unchanged', 0)} unchanged, {result.get('removed', 0)} removed, "
        f"{result.get('skipped', 0)} skipped"
    )
    if result.get("images_per_s"):
        print(f"{result['images_per_s']:.1f} images/s")
    if result.get("skipped"):
        print("see `visiondesk search status` for the skipped files and why", file=sys.stderr)
    for gone in result.get("gone", []):
        print(
            f"visiondesk: {gone['path']} is gone; its {gone['items']} files stay in the index, "
            f"left out of results (reconnect it, or: visiondesk search forget {gone['path']})",
            file=sys.stderr,
        )
    if finished.reason == "cancelled":
        print("visiondesk: cancelled; run the same command to resume", file=sys.stderr)
        return exit_codes.INTERRUPTED
    return exit_codes.OK


def run_query(args: argparse.Namespace) -> int:
    if not args.text.strip() and not args.image:
        return _error("give a text to search for, or --image")
    if args.top < 1:
        return _error("--top must be at least 1")
    image = None
    if args.image:
        image = str(Path(args.image).expanduser().resolve())
        if not Path(image).is_file():
            return _error(f"image not found: {image}", exit_codes.BAD_INPUT)
    command = ps.SearchQuery(
        job_id=new_job_id(),
        data_dir=str(data_dir()),
        text=args.text,
        image=image,
        model=_model_arg(args.model) if args.model else None,
        top_k=args.top,
        text_weight=args.text_weight,
        tags=args.tag,
        folders=[str(Path(folder).expanduser().resolve()) for folder in args.folder],
        exact=True if args.exact else None,
        quant=args.quant,
        device=args.device,
    )
    finished = run_one_job(command)
    if finished is None or finished.reason != "done":
        return _failed(finished)
    result = finished.result or {}
    hits = ps.decode_hits(result)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return exit_codes.OK
    for rank, hit in enumerate(hits, 1):
        where = hit.path + (f" (page {hit.page + 1})" if hit.page else "")
        tags = f"  [{', '.join(hit.tags)}]" if hit.tags else ""
        print(f"{rank:>3}  {hit.score:6.3f}  {where}{tags}")
    kind = "exact" if result.get("exact") else "approximate"
    print(
        f"{len(hits)} of {result.get('vectors', 0)} images, {kind} search, "
        f"{result.get('elapsed_ms', 0):.0f} ms; model {result.get('model')}",
        file=sys.stderr,
    )
    return exit_codes.OK


def run_status(args: argparse.Namespace) -> int:
    command = ps.SearchStatus(
        job_id=new_job_id(), data_dir=str(data_dir()), skipped_limit=max(0, args.skipped)
    )
    finished = run_one_job(command)
    if finished is None or finished.reason != "done":
        return _failed(finished)
    status = ps.decode_status(finished.result)
    if args.json:
        print(json.dumps((finished.result or {}).get("status", {}), ensure_ascii=False))
        return exit_codes.OK
    print(f"Index: {status.path}")
    if not status.folders:
        print("Nothing indexed yet: visiondesk search index FOLDER --model MODEL")
        return exit_codes.OK
    print(f"Folders ({status.items} files):")
    for folder in status.folders:
        when = _when(folder.last_indexed_at)
        pages = ", every PDF page" if folder.pdf_pages == "all" else ""
        gone = " (gone from disk: left out of results)" if folder.gone else ""
        print(f"  {folder.path}  {folder.items} files, indexed {when}{pages}{gone}")
    print("Models:")
    for model in status.models:
        labels = f"; tags: {', '.join(model.labels)}" if model.labels else ""
        print(
            f"  {model.name}  ({model.model_type}, {model.dimension}-d) "
            f"{model.vectors} vectors{labels}"
        )
    if status.skipped_total:
        print(f"Skipped ({status.skipped_total}):")
        for skipped in status.skipped:
            print(f"  {skipped.path}: {skipped.reason}")
        if status.skipped_total > len(status.skipped):
            print(f"  … and {status.skipped_total - len(status.skipped)} more (--skipped N)")
    return exit_codes.OK


def run_tag(args: argparse.Namespace) -> int:
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        return _error("--threshold is a probability between 0 and 1")
    command = ps.TagImages(
        job_id=new_job_id(),
        data_dir=str(data_dir()),
        labels=args.labels,
        model=_model_arg(args.model) if args.model else None,
        templates=args.template or list(ps.DEFAULT_TAG_TEMPLATES),
        threshold=args.threshold,
        quant=args.quant,
        device=args.device,
    )
    finished = run_one_job(command)
    if finished is None or finished.reason != "done":
        return _failed(finished)
    result = finished.result or {}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return exit_codes.OK
    print(
        f"Scored {result.get('images', 0)} images ({result.get('scoring')}, "
        f"tag at p ≥ {result.get('threshold', 0):.2f}):"
    )
    for label, count in (result.get("tagged") or {}).items():
        print(f"  {label}: {count}")
    return exit_codes.OK


def run_forget(args: argparse.Namespace) -> int:
    command = ps.RemoveFolders(
        job_id=new_job_id(),
        data_dir=str(data_dir()),
        folders=[str(Path(folder).expanduser().resolve()) for folder in args.folders],
    )
    finished = run_one_job(command)
    if finished is None or finished.reason != "done":
        return _failed(finished)
    result = finished.result or {}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"Removed {result.get('removed', 0)} files from the index (none from disk).")
    return exit_codes.OK


# --- helpers -----------------------------------------------------------------------------------


def _failed(finished: p.Finished | None) -> int:
    if finished is None:
        return exit_codes.FAILED
    if finished.reason == "cancelled":
        print("visiondesk: cancelled", file=sys.stderr)
        return exit_codes.INTERRUPTED
    print(f"visiondesk: error: {finished.message or finished.reason}", file=sys.stderr)
    if finished.error_code == ps.SearchErrorCode.NO_INDEX:
        return exit_codes.BAD_INPUT
    return exit_codes.for_error(finished.error_code)


def _error(message: str, code: int = exit_codes.USAGE) -> int:
    print(f"visiondesk: error: {message}", file=sys.stderr)
    return code


def _model_arg(model: str) -> str:
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "never (interrupted?)"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


class _ProgressLine:
    """One updating line on a terminal; a line every few seconds when stderr is a file."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = 0.0
        self._shown = False

    def show(self, event: p.Event) -> None:
        if not isinstance(event, p.Progress) or not event.message:
            return
        now = time.monotonic()
        if not self._tty and now - self._last < 5.0 and event.stage == "indexing":
            return
        self._last = now
        text = f"{event.stage.capitalize()}: {event.message}"
        if self._tty:
            sys.stderr.write("\r\033[K" + text[:160])
            self._shown = True
        else:
            print(text, file=sys.stderr)
        sys.stderr.flush()

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
