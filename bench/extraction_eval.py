"""Extraction quality of one backend on a synthetic set with exact ground truth.

    python bench/extraction_eval.py --backend Qwen/Qwen2-VL-7B-Instruct
    python bench/extraction_eval.py --backend tiny --count 1 --one-pass      # CPU smoke run
    python bench/extraction_eval.py --backend anthropic --backend-model claude-sonnet-4-5

Generates the set offline from ``--seed`` (charts, invoices and receipts in several number and
date formats, tables with merged cells; native PDFs, pages rasterised at 72–200 DPI and
simulated scans; see bench/eval_data), reads every document through the engine exactly as
``visiondesk extract`` does, and scores the answers (bench/metrics.py): field F1 for every
document, relaxed accuracy (5 %) for chart values, cell F1 for tables. Prints a table per kind
and per rendering, the share of schema-valid answers and pages/s (model load excluded), and
writes everything, each document's scores included, as JSON.

``--backend`` is a model folder or Hugging Face repo id, ``tiny`` (or ``tiny:FAMILY``) for a
random-weight model built on the spot, or a cloud backend: anthropic, openai, gemini,
remote:URL (keys as for ``visiondesk``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import metrics  # noqa: E402
from bench.eval_data import KINDS, Item, generate  # noqa: E402
from desktop.cli.engine_process import EngineGone, EngineProcess  # noqa: E402
from engine import protocol as p  # noqa: E402
from engine.protocol import cloud as c  # noqa: E402
from engine.protocol import extract as px  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, metavar="MODEL",
                        help="model folder or repo id, tiny[:FAMILY], anthropic, openai, gemini "
                        "or remote:URL")  # fmt: skip
    parser.add_argument("--backend-model", default=None, help="the provider's model id")
    parser.add_argument("--quant", choices=["auto", "nf4", "int8", "none"], default="auto")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu", "mps"], default="auto")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"from {', '.join(KINDS)}")
    parser.add_argument("--count", type=int, default=4, help="documents per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="where the set is written (default: temp)")
    passes = parser.add_mutually_exclusive_group()
    passes.add_argument("--two-pass", dest="two_pass", action="store_true", default=True)
    passes.add_argument("--one-pass", dest="two_pass", action="store_false")
    parser.add_argument("--max-new-tokens", type=int, default=px.ExtractOptions().max_new_tokens)
    parser.add_argument("--max-long-side", type=int, default=px.ExtractOptions().max_long_side)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "extraction_eval.json"))
    return parser.parse_args(argv)


def backend_fields(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """The model to load (None for a cloud backend) and the routing fields of each command."""
    name = args.backend
    if name in c.CLOUD_PROVIDERS:
        return None, {"backend": name, "backend_model": args.backend_model}
    if name.startswith(f"{c.REMOTE}:"):
        return None, {"backend": c.REMOTE, "base_url": name.split(":", 1)[1],
                      "backend_model": args.backend_model}  # fmt: skip
    if name == "tiny" or name.startswith("tiny:"):
        from engine.testing import tiny_model_path

        return str(tiny_model_path(name.partition(":")[2] or "llava")), {}
    path = Path(name).expanduser()
    return (str(path.resolve()) if path.exists() else name), {}


def score(item: Item, data: Any) -> dict[str, float]:
    """The item's metrics for an answer (``data`` None when there was no valid one)."""
    scores = {"field_f1": metrics.field_f1(data, item.truth)["f1"]}
    if item.kind == "chart":
        scores["relaxed_accuracy"] = metrics.relaxed_accuracy(data, item.truth)["accuracy"]
    if item.kind == "table":
        spans = item.variant.get("spans") or []
        scores["cell_f1"] = metrics.table_cell_f1(data, item.truth, spans)["f1"]
    return scores


def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise SystemExit(f"unknown kinds: {', '.join(sorted(unknown))}")
    folder = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="visiondesk-eval-"))
    started = time.perf_counter()
    items = generate(folder, args.seed, {kind: args.count for kind in kinds})
    generate_s = time.perf_counter() - started
    model, routing = backend_fields(args)
    options = px.ExtractOptions(
        two_pass=args.two_pass,
        max_new_tokens=args.max_new_tokens,
        max_long_side=args.max_long_side,
        max_pixels=max(args.max_long_side * args.max_long_side * 3 // 4, 64 * 64),
    )
    results: list[dict[str, Any]] = []
    with EngineProcess(folder / "engine.log") as engine:
        load_s = _load(engine, model, args) if model else 0.0
        for item in items:
            results.append(_extract(engine, item, folder, model, routing, options, args))
            print(_line(results[-1]), file=sys.stderr, flush=True)
    return _report(args, items, results, folder, generate_s, load_s, model)


def _load(engine: EngineProcess, model: str, args: argparse.Namespace) -> float:
    began = time.perf_counter()
    command = p.LoadModel(
        job_id=uuid.uuid4().hex, model=model, quant=args.quant, device=args.device
    )
    for event in engine.run_job(command):
        if isinstance(event, p.Finished) and event.reason == "error":
            raise SystemExit(f"the model could not be loaded: {event.message}")
    return time.perf_counter() - began


def _extract(
    engine: EngineProcess,
    item: Item,
    folder: Path,
    model: str | None,
    routing: dict[str, Any],
    options: px.ExtractOptions,
    args: argparse.Namespace,
) -> dict[str, Any]:
    command = px.Extract(
        job_id=uuid.uuid4().hex, path=str(folder / item.file), schema=item.schema, model=model,
        quant=args.quant, device=args.device, options=options, **routing,
    )  # fmt: skip
    began = time.perf_counter()
    finished: p.Finished | None = None
    engine.send(command)
    try:
        for event in engine.events():
            if isinstance(event, p.Finished) and event.job_id == command.job_id:
                finished = event
                break
    except EngineGone as exc:
        raise SystemExit(f"the engine stopped: {exc}") from exc
    seconds = time.perf_counter() - began
    assert finished is not None
    document = finished.result or {}
    pages = document.get("pages") or []
    valid = finished.reason != "error" and document.get("status") == "ok"
    data = document.get("data") if valid else None
    return {
        "id": item.id,
        "kind": item.kind,
        "variant": item.variant,
        "seconds": round(seconds, 3),
        "pages": len(pages) or 1,
        "valid": valid,
        "error": finished.message if finished.reason == "error" else _page_error(pages),
        "scores": score(item, data),
        "answer": data,
    }


def _page_error(pages: list[dict[str, Any]]) -> str:
    for page in pages:
        if page.get("status") != "ok":
            return f"page {page.get('page')}: {page.get('error') or page.get('status')}"
    return ""


def _line(result: dict[str, Any]) -> str:
    scores = " ".join(f"{k}={v:.2f}" for k, v in result["scores"].items())
    state = "valid" if result["valid"] else f"not valid ({result['error'] or 'no answer'})"
    return f"{result['id']}: {state}, {scores}, {result['seconds']:.1f} s"


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({name for r in results for name in r["scores"]})
    seconds = sum(r["seconds"] for r in results)
    pages = sum(r["pages"] for r in results)
    summary: dict[str, Any] = {
        "documents": len(results),
        "valid": sum(r["valid"] for r in results) / len(results) if results else 0.0,
        "pages": pages,
        "seconds": round(seconds, 3),
        "pages_per_s": pages / seconds if seconds else 0.0,
    }
    for name in names:
        values = [r["scores"][name] for r in results if name in r["scores"]]
        summary[name] = statistics.fmean(values) if values else None
    return summary


def _report(
    args: argparse.Namespace,
    items: list[Item],
    results: list[dict[str, Any]],
    folder: Path,
    generate_s: float,
    load_s: float,
    model: str | None,
) -> dict[str, Any]:
    by_kind = {kind: _summary([r for r in results if r["kind"] == kind]) for kind in
               dict.fromkeys(r["kind"] for r in results)}  # fmt: skip
    renderings = dict.fromkeys(r["variant"].get("rendering") for r in results)
    by_rendering = {
        str(name): _summary([r for r in results if r["variant"].get("rendering") == name])
        for name in renderings
    }
    report = {
        "backend": args.backend,
        "model": model or args.backend_model,
        "quant": args.quant,
        "device": args.device,
        "two_pass": args.two_pass,
        "max_new_tokens": args.max_new_tokens,
        "max_long_side": args.max_long_side,
        "seed": args.seed,
        "data": str(folder),
        "machine": platform.platform(),
        "generate_s": round(generate_s, 3),
        "load_s": round(load_s, 3),
        "overall": _summary(results),
        "by_kind": by_kind,
        "by_rendering": by_rendering,
        "documents": results,
    }
    _print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {out}")
    return report


def _print_table(report: dict[str, Any]) -> None:
    columns = ("documents", "valid", "field_f1", "relaxed_accuracy", "cell_f1", "pages_per_s")
    headings = ("docs", "valid", "field F1", "chart RA", "cell F1", "pages/s")

    def row(name: str, summary: dict[str, Any]) -> str:
        cells = []
        for column in columns:
            value = summary.get(column)
            cells.append(
                "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
            )
        return f"{name:<14}" + "".join(f"{cell:>10}" for cell in cells)

    print(f"\nbackend {report['backend']} ({report['model']}), "
          f"{'two passes' if report['two_pass'] else 'one pass'}, seed {report['seed']}, "
          f"model load {report['load_s']:.1f} s")  # fmt: skip
    print(f"{'':<14}" + "".join(f"{h:>10}" for h in headings))
    for name, summary in report["by_kind"].items():
        print(row(name, summary))
    for name, summary in report["by_rendering"].items():
        print(row(f"  {name}", summary))
    print(row("all", report["overall"]))


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
