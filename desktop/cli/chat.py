"""``visiondesk chat``: a question about images, answered through the engine, streamed; or, with
``--interactive`` (or no question), a conversation typed in the terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgspec

from desktop.cli import backends, exit_codes
from desktop.cli.data_folder import engine_log
from desktop.cli.engine_process import EngineGone, EngineProcess, new_job_id
from desktop.extraction_queue import printable, utf8_name
from engine import protocol as p


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help="ask a model about one or more images")
    parser.add_argument(
        "prompt", nargs="?", default=None, help="the question (none: a conversation, as -i)"
    )
    parser.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="a conversation: type questions; /image PATH attaches, /new starts over, /exit",
    )
    parser.add_argument("--model", default=None, help="local model folder or Hugging Face repo id")
    parser.add_argument(
        "--adapter", default=None, metavar="DIR", help="a LoRA adapter trained with `finetune`"
    )
    parser.add_argument("--image", action="append", default=[], metavar="IMG", help="repeatable")
    parser.add_argument("--system", default=None, help="an optional system message")
    parser.add_argument("--quant", choices=["auto", "nf4", "int8", "none"], default="auto")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu", "mps"], default="auto")
    backends.add_backend_arguments(parser)
    backends.add_consent_arguments(parser)
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
        problem = _image_problem(image)
        if problem:
            print(f"visiondesk: error: {problem}", file=sys.stderr)
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
    system = [p.ChatMessage(role="system", text=args.system)] if args.system else []
    question = [p.ChatMessage(role="user", text=args.prompt or "", images=images)]
    command = p.Chat(
        job_id=new_job_id(),
        messages=system + question,
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
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
        **routing,
    )
    try:
        with EngineProcess(engine_log(), verbose=args.verbose) as engine:
            if args.interactive or args.prompt is None:
                return _converse(engine, command, images, as_json=args.json)
            return _stream(engine, command, as_json=args.json)[0]
    except EngineGone as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED


def _image_problem(image: str) -> str | None:
    """Why the picture at ``image`` cannot be sent, or None."""
    if not utf8_name(image):
        return f"the file name '{printable(image)}' is not valid UTF-8; rename the file to send it"
    if not Path(image).is_file():
        return f"image not found: {image}"
    return None


HELP = (
    "Type a question and press Enter. /image PATH attaches a picture to the next question, "
    "/new starts over, /exit (or Ctrl-D) quits; Ctrl-C stops an answer."
)


def _converse(engine: EngineProcess, base: p.Chat, images: list[str], as_json: bool) -> int:
    """Questions read line by line, each answered with the conversation so far: the engine
    keeps it cached, so a follow-up about the same picture reads only its own words."""
    system = [m for m in base.messages if m.role == "system"]
    history: list[p.ChatMessage] = []
    pending = list(images)  # pictures for the next question
    first = base.messages[-1].text.strip()
    interactive = sys.stdin.isatty()
    if interactive and not as_json:
        print(HELP, file=sys.stderr)
    code = exit_codes.OK  # stays the first failure's, for scripts that pipe questions in
    while True:
        if first:
            line, first = first, ""
        else:
            try:
                line = input("> " if interactive else "").strip()
            except (EOFError, KeyboardInterrupt):
                return code
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return code
        if line == "/new":
            history, pending = [], []
            print("visiondesk: a new conversation", file=sys.stderr)
            continue
        if line.startswith("/image"):
            given = line.removeprefix("/image").strip()
            path = Path(given).expanduser().resolve()
            if not given:
                print("visiondesk: /image PATH attaches the picture at PATH", file=sys.stderr)
            elif problem := _image_problem(str(path)):
                print(f"visiondesk: error: {problem}", file=sys.stderr)
                code = code or exit_codes.BAD_INPUT
            else:
                pending.append(str(path))
                print(f"visiondesk: {path.name} goes with the next question", file=sys.stderr)
            continue
        if line.startswith("/"):
            print(f"visiondesk: {HELP}", file=sys.stderr)
            continue
        question = p.ChatMessage(role="user", text=line, images=pending)
        command = msgspec.structs.replace(
            base, job_id=new_job_id(), messages=[*system, *history, question]
        )
        result, finished = _stream(engine, command, as_json)
        if result != exit_codes.INTERRUPTED:  # a stopped answer is the user's choice, no failure
            code = code or result  # the exit code keeps the first failure
        if finished is not None and finished.reason in ("done", "length"):
            answer = str((finished.result or {}).get("text", ""))
            history += [question, p.ChatMessage(role="assistant", text=answer)]
            pending = []
        elif finished is not None and finished.error_code == p.ErrorCode.BAD_INPUT and pending:
            # A picture the engine cannot read would fail every later question too.
            pending = []
            print("visiondesk: the question's pictures were dropped; /image attaches others",
                  file=sys.stderr)  # fmt: skip


def _stream(engine: EngineProcess, command: p.Chat, as_json: bool) -> tuple[int, p.Finished | None]:
    """Print one answer as it comes; the exit code and how the job ended (None if stopped)."""
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
        engine.send(p.Cancel(job_id=command.job_id))  # its late events are skipped: run_job
        print("\nvisiondesk: cancelled", file=sys.stderr)
        return exit_codes.INTERRUPTED, None
    assert finished is not None
    if wrote_text and not as_json:
        out.write("\n")
    if finished.reason == "error":
        message = exit_codes.explained(finished.error_code, finished.message)
        print(f"visiondesk: error: {message}", file=sys.stderr)
        return exit_codes.for_error(finished.error_code), finished
    if finished.reason == "length" and not as_json:
        print("visiondesk: stopped at --max-new-tokens", file=sys.stderr)
    return exit_codes.OK, finished
