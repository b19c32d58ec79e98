"""``visiondesk chat``: one question about images, answered through the engine, streamed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from desktop.cli import backends, exit_codes
from desktop.cli.engine_process import EngineGone, EngineProcess, new_job_id
from desktop.paths import data_dir
from engine import protocol as p


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help="ask a model about one or more images")
    parser.add_argument("prompt", help="the question or instruction")
    parser.add_argument("--model", default=None, help="local model folder or Hugging Face repo id")
    parser.add_argument(
        "--adapter", default=None, metavar="DIR", help="a LoRA adapter trained with `finetune`"
    )
    parser.add_argument("--image", action="append", default=[], metavar="IMG", help="repeatable")
    parser.add_argument("--system", default=None, help="an optional system message")
    parser.add_argument("--quant", choices=["auto", "nf4", "int8", "none"], default="auto")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu", "mps"], default="auto")
    backends.add_backend_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="one JSON event per line")
    parser.add_argument("--verbose", action="store_true", help="show the engine's log")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        print("visiondesk: error: --max-new-tokens must be at least 1", file=sys.stderr)
        return exit_codes.USAGE
    images = [str(Path(image).expanduser().resolve()) for image in args.image]
    for image in images:  # fail before starting the engine for the obvious case
        if not Path(image).is_file():
            print(f"visiondesk: error: image not found: {image}", file=sys.stderr)
            return exit_codes.BAD_INPUT
    try:
        routing = backends.backend_fields(args)
    except backends.BackendChoiceError as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    model = args.model
    if model is None and backends.requires_local_model(routing):
        print("visiondesk: error: --model is required (or name a --backend)", file=sys.stderr)
        return exit_codes.USAGE
    if model and Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    messages = []
    if args.system:
        messages.append(p.ChatMessage(role="system", text=args.system))
    messages.append(p.ChatMessage(role="user", text=args.prompt, images=images))
    command = p.Chat(
        job_id=new_job_id(),
        messages=messages,
        model=model,
        quant=args.quant,
        device=args.device,
        sampling=p.Sampling(
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        ),
        adapter=str(Path(args.adapter).expanduser().resolve()) if args.adapter else None,
        **routing,
    )
    try:
        with EngineProcess(data_dir() / "logs" / "engine.log", verbose=args.verbose) as engine:
            return _stream(engine, command, as_json=args.json)
    except EngineGone as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED


def _stream(engine: EngineProcess, command: p.Chat, as_json: bool) -> int:
    out = sys.stdout
    finished: p.Finished | None = None
    wrote_text = False
    try:
        for event in engine.run_job(command):
            if as_json:
                out.write(json.dumps(p.to_builtins(event), ensure_ascii=False) + "\n")
                out.flush()
            elif isinstance(event, p.Delta):
                out.write(event.text)
                out.flush()
                wrote_text = True
            elif isinstance(event, p.Progress) and event.stage == "routing":
                print(f"visiondesk: {event.message}", file=sys.stderr)  # who answers, and why
            if isinstance(event, p.Finished):
                finished = event
    except KeyboardInterrupt:
        engine.send(p.Cancel(job_id=command.job_id))
        print("\nvisiondesk: cancelled", file=sys.stderr)
        return exit_codes.INTERRUPTED
    assert finished is not None
    if wrote_text and not as_json:
        out.write("\n")
    if finished.reason == "error":
        print(f"visiondesk: error: {finished.message}", file=sys.stderr)
        return exit_codes.for_error(finished.error_code)
    if finished.reason == "length" and not as_json:
        print("visiondesk: stopped at --max-new-tokens", file=sys.stderr)
    return exit_codes.OK
