"""``visiondesk models plan|download|list|delete|import|load|catalogue``: the model manager.

Every subcommand but ``catalogue`` is one engine job; the engine does the work (huggingface_hub,
transformers) and this module prints what it reports.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import msgspec

from desktop import catalogue as cat
from desktop.cli import exit_codes
from desktop.cli.engine_process import new_job_id, run_one_job
from desktop.paths import data_dir, runs_dir
from engine import protocol as p
from engine.protocol import models as pm
from engine.protocol.base import MAX_IMAGE_PIXELS

QUANTS = ["auto", "nf4", "int8", "none"]
DEVICES = ["auto", "cuda", "cpu", "mps"]


def managed_root() -> Path:
    """Where ``models import`` copies folders; only folders here can be deleted."""
    return data_dir() / "models"


def add_commands(commands: argparse._SubParsersAction) -> None:
    plan = commands.add_parser("plan", help="how much memory a model needs, and whether it fits")
    plan.add_argument("model", help="model folder, cached repo id, or (with --fetch) any repo id")
    plan.add_argument("--quant", choices=QUANTS, default="auto")
    plan.add_argument("--device", choices=DEVICES, default="auto")
    plan.add_argument("--image-size", default="1024x768", metavar="WxH")
    plan.add_argument("--images", type=int, default=1, metavar="N")
    plan.add_argument("--context", type=int, default=2048, metavar="T", help="text tokens")
    plan.add_argument("--vram", type=float, default=None, metavar="GB", help="plan for this GPU")
    plan.add_argument("--fetch", action="store_true", help="fetch config files from the Hub")
    plan.add_argument("--trust-remote-code", action="store_true")
    plan.add_argument("--json", action="store_true", help="the plan as JSON")
    plan.set_defaults(run=run_plan)

    download = commands.add_parser("download", help="download a model from the Hugging Face Hub")
    download.add_argument("repo_id")
    download.add_argument("--revision", default="main")
    download.add_argument("--include", action="append", default=None, metavar="PATTERN")
    download.add_argument("--cache-dir", default=None)
    download.add_argument("--endpoint", default=None, help="a Hub mirror (default: HF_ENDPOINT)")
    download.add_argument("--json", action="store_true", help="one JSON event per line")
    download.set_defaults(run=run_download)

    listing = commands.add_parser("list", help="models on this machine")
    listing.add_argument("--folder", action="append", default=[], metavar="DIR")
    listing.add_argument("--cache-dir", default=None)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run_list)

    delete = commands.add_parser("delete", help="delete a cached or imported model")
    delete.add_argument("model")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    delete.add_argument("--cache-dir", default=None)
    delete.set_defaults(run=run_delete)

    importing = commands.add_parser("import", help="copy a model folder into VisionDesk")
    importing.add_argument("source")
    importing.add_argument("--name", default=None)
    importing.set_defaults(run=run_import)

    load = commands.add_parser("load", help="check that a model loads here (and what it takes)")
    load.add_argument("model")
    load.add_argument("--quant", choices=QUANTS, default="auto")
    load.add_argument("--device", choices=DEVICES, default="auto")
    load.add_argument("--allow-pickle", action="store_true", help="consent to pickle weights")
    load.add_argument("--trust-remote-code", action="store_true", help="consent to its code")
    load.add_argument("--json", action="store_true")
    load.set_defaults(run=run_load)

    picks = commands.add_parser("catalogue", help="recommended models for a GPU size")
    picks.add_argument("--vram", type=float, default=None, metavar="GB", help="0 for the CPU")
    picks.add_argument("--json", action="store_true")
    picks.set_defaults(run=run_catalogue)


# --- subcommands --------------------------------------------------------------------------------


def run_plan(args: argparse.Namespace) -> int:
    match = re.fullmatch(r"(\d+)[xX](\d+)", args.image_size)
    if not match or min(int(match[1]), int(match[2])) < 1:
        return _usage(f"--image-size must look like 1024x768, not {args.image_size!r}")
    # The planner builds a blank image of this size: a huge one takes all the engine's memory,
    # and VisionDesk never opens an image this large anyway (load_image's limit).
    if int(match[1]) * int(match[2]) > MAX_IMAGE_PIXELS:
        return _usage(
            f"--image-size {args.image_size} is over {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, "
            "more than VisionDesk opens"
        )
    if args.images < 0 or args.context < 0:
        return _usage("--images and --context must not be negative")
    if args.vram is not None and args.vram <= 0:
        return _usage("--vram is the GPU's memory in GB and must be more than 0")
    command = pm.PlanMemory(
        job_id=new_job_id(),
        model=_model_arg(args.model),
        quant=args.quant,
        device=args.device,
        image_width=int(match[1]),
        image_height=int(match[2]),
        images=args.images,
        context_tokens=args.context,
        vram_bytes=int(args.vram * pm.GIB) if args.vram else None,
        fetch_config=args.fetch,
        trust_remote_code=args.trust_remote_code,
    )
    finished = run_one_job(command)
    if finished is None or finished.reason != "done" or finished.result is None:
        return _failed(finished)
    plan = msgspec.convert(finished.result["plan"], pm.MemoryPlan)
    if args.json:
        print(json.dumps(msgspec.to_builtins(plan), indent=2))
        return exit_codes.OK
    rows = pm.describe_plan(plan)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    for line in plan.advice:
        print(f"advice: {line}")
    for line in plan.notes:
        print(f"note: {line}")
    for need in plan.needs_consent:
        print(f"note: loading needs your consent ({_consent_words(need)})")
    return exit_codes.OK


def run_download(args: argparse.Namespace) -> int:
    command = pm.DownloadModel(
        job_id=new_job_id(),
        repo_id=args.repo_id,
        revision=args.revision,
        allow_patterns=args.include,
        cache_dir=args.cache_dir,
        endpoint=args.endpoint,
    )
    reporter = _ProgressLine()

    def show(event: p.Event) -> None:
        if args.json:
            print(json.dumps(p.to_builtins(event), ensure_ascii=False), flush=True)
        elif isinstance(event, p.PartialResult) and event.data.get("notice"):
            reporter.note(str(event.data["notice"]))  # e.g. a token the Hub rejected
        elif isinstance(event, p.Progress):
            reporter.show(event.message, transient=event.total is None)

    finished = run_one_job(command, show, cancel_hint="run the same command again to resume")
    reporter.done()
    if finished is None:
        return exit_codes.FAILED
    if finished.reason == "cancelled":
        return exit_codes.INTERRUPTED
    if finished.reason != "done" or finished.result is None:
        return _failed(finished)
    if not args.json:
        result = finished.result
        skipped = f", {result['files_skipped']} already here" if result["files_skipped"] else ""
        print(
            f"visiondesk: {args.repo_id}: {result['files']} files"
            f" ({pm.format_bytes(result['bytes_total'])}){skipped}",
            file=sys.stderr,
        )
        print(result["path"])
    return exit_codes.OK


def run_list(args: argparse.Namespace) -> int:
    folders = [str(Path(f).expanduser().resolve()) for f in args.folder]
    root = managed_root()
    if root.is_dir():
        folders += [str(child) for child in sorted(root.iterdir()) if child.is_dir()]
    finished = run_one_job(
        pm.ListInstalled(job_id=new_job_id(), folders=folders, cache_dir=args.cache_dir)
    )
    if finished is None or finished.reason != "done" or finished.result is None:
        return _failed(finished)
    models = [msgspec.convert(entry, pm.InstalledModel) for entry in finished.result["models"]]
    if args.json:
        print(json.dumps([msgspec.to_builtins(m) for m in models], indent=2))
        return exit_codes.OK
    if not models:
        print("No models yet: `visiondesk models download REPO` or `visiondesk models catalogue`.")
        return exit_codes.OK
    for model in models:
        flags = [] if model.complete else ["incomplete"]
        flags += ["demo"] if model.is_demo else []
        flags += [f"needs consent: {_consent_words(n)}" for n in model.needs_consent]
        status = f"  [{', '.join(flags)}]" if flags else ""
        print(
            f"{model.model}  {model.kind} {model.model_type}  "
            f"{pm.format_bytes(model.size_bytes)}  ({model.source}){status}"
        )
    return exit_codes.OK


def run_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            return _usage("add --yes to delete without a question")
        answer = input(f"Delete {args.model} from this machine? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return exit_codes.OK
    model = args.model
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    command = pm.DeleteModel(
        job_id=new_job_id(),
        model=model,
        cache_dir=args.cache_dir,
        managed_root=str(managed_root()),
        runs_dir=str(runs_dir()),
    )
    finished = run_one_job(command)
    if finished is None or finished.reason != "done" or finished.result is None:
        return _failed(finished)
    freed = pm.format_bytes(finished.result["freed_bytes"])
    print(f"visiondesk: deleted {args.model} ({freed} freed)", file=sys.stderr)
    return exit_codes.OK


def run_import(args: argparse.Namespace) -> int:
    source = Path(args.source).expanduser().resolve()
    if not source.is_dir():
        print(f"visiondesk: error: not a folder: {args.source}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    if args.name is not None and (args.name in ("", ".", "..") or re.search(r"[/\\]", args.name)):
        print(
            f"visiondesk: error: --name {args.name!r} is not a folder name; give one plain name "
            "(no '/', '\\' or '..'): the copy goes into the models folder",
            file=sys.stderr,
        )
        return exit_codes.USAGE
    reporter = _ProgressLine()
    command = pm.ImportFolder(
        job_id=new_job_id(),
        source=str(source),
        destination_root=str(managed_root()),
        name=args.name,
    )

    def show(event: p.Event) -> None:
        if isinstance(event, p.Progress) and event.total:
            reporter.show(f"{event.message} · {event.current / event.total:.0%}")

    finished = run_one_job(command, show)
    reporter.done()
    if finished is None or finished.reason != "done" or finished.result is None:
        return _failed(finished)
    for need in finished.result.get("needs_consent", []):
        print(f"visiondesk: note: loading needs consent ({_consent_words(need)})", file=sys.stderr)
    print(finished.result["path"])
    return exit_codes.OK


def run_load(args: argparse.Namespace) -> int:
    command = p.LoadModel(
        job_id=new_job_id(),
        model=_model_arg(args.model),
        quant=args.quant,
        device=args.device,
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
    )
    finished = run_one_job(command)
    if finished is None or finished.reason != "done" or finished.result is None:
        return _failed(finished)
    info = finished.result["model"]
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(
            f"loaded {info['model']} ({info['family']}): {info['quant']} on {info['device']}, "
            f"{info['dtype']}, {pm.format_bytes(info['memory_bytes'], binary=True)} of weights"
        )
    return exit_codes.OK


def run_catalogue(args: argparse.Namespace) -> int:
    catalogue = cat.load_catalogue()
    if not catalogue.models:
        print(f"visiondesk: error: {catalogue.note}", file=sys.stderr)
        return exit_codes.FAILED
    vram = int(args.vram * pm.GIB) if args.vram else None
    groups = [cat.group_for(vram), "embeddings"]
    if args.json:
        data = {g: [msgspec.to_builtins(e) for e in cat.picks(catalogue, g)] for g in groups}
        print(json.dumps(data, indent=2))
        return exit_codes.OK
    for group in groups:
        print(f"{group}:")
        for entry in cat.picks(catalogue, group):
            quant = cat.best_quant(entry, vram) if vram else "none"
            verdict = entry.fit(quant, vram).replace("_", " ") if vram else "CPU"
            gated = ", gated" if entry.gated else ""
            print(
                f"  {entry.repo_id}  {entry.params_b:g} B, {entry.licence}{gated}, "
                f"{' / '.join(entry.good_at)} — {quant}: {verdict}"
            )
    return exit_codes.OK


# --- helpers ------------------------------------------------------------------------------------


def _failed(finished: p.Finished | None) -> int:
    if finished is None:
        return exit_codes.FAILED
    print(f"visiondesk: error: {finished.message or finished.reason}", file=sys.stderr)
    # Access to a model: its licence, or the token that is sent for it.
    if finished.error_code in (pm.ModelsErrorCode.GATED, pm.ModelsErrorCode.TOKEN_REJECTED):
        return exit_codes.MODEL_PROBLEM
    return exit_codes.for_error(finished.error_code)


def _usage(message: str) -> int:
    print(f"visiondesk: error: {message}", file=sys.stderr)
    return exit_codes.USAGE


def _model_arg(model: str) -> str:
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _consent_words(need: str) -> str:
    return {"pickle": "pickle weights", "remote_code": "the model's own Python code"}.get(
        need, need
    )


class _ProgressLine:
    """One updating line on a terminal; a line every few seconds when stderr is a file."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        # In a log, the first line 2 s into the job: a quick one, or a quick refusal, prints none.
        self._last: float | None = None
        self._shown = False
        self._transient = False

    def show(self, text: str, transient: bool = False) -> None:
        """``transient``: a state (contacting the Hub) worth seeing on a terminal while it
        lasts, not worth a line in a log."""
        now = time.monotonic()
        if self._tty:
            sys.stderr.write(f"\r\033[K{text}")
            sys.stderr.flush()
            self._shown, self._transient = True, transient
        elif self._last is None:
            self._last = now
        elif not transient and now - self._last >= 2.0:
            self._last = now
            print(f"visiondesk: {text}", file=sys.stderr)

    def note(self, text: str) -> None:
        """A line of its own that stays, between progress updates."""
        if self._shown:
            sys.stderr.write("\r\033[K")
            self._shown = False
        print(f"visiondesk: note: {text}", file=sys.stderr)

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K" if self._transient else "\n")
            sys.stderr.flush()
            self._shown = False
