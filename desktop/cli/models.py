"""``visiondesk models …``: model utilities from the terminal."""

from __future__ import annotations

import argparse
import subprocess
import sys

from desktop.cli import exit_codes, models_manage

_BUILDER_NAME = "python -m engine.testing make-demo"  # how the builder names itself


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="manage models")
    commands = parser.add_subparsers(dest="models_command", required=True)
    demo = commands.add_parser(
        "make-demo",
        help="write a tiny random-weight model to try the interface offline (answers are random text)",
    )
    demo.add_argument("dir", help="folder to write the model into")
    demo.add_argument("--family", default="llava", help="model family (default: llava)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=run_make_demo, needs_data_folder=False)
    models_manage.add_commands(commands)  # plan, download, list, delete, import, load, catalogue


def run_make_demo(args: argparse.Namespace) -> int:
    # The builder needs torch; it runs in its own process so the CLI itself stays light. It
    # knows the families and says what the model is good for; its words are passed on as ours.
    # The interpreter is this one: a ``python`` on PATH may be another one, or none at all.
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.testing",
            "make-demo",
            args.dir,
            "--family",
            args.family,
            "--seed",
            str(args.seed),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    sys.stdout.write(completed.stdout)
    sys.stderr.write(completed.stderr.replace(_BUILDER_NAME, "visiondesk models make-demo"))
    if completed.returncode != 0:
        print(f"visiondesk: error: could not build the {args.family} demo model", file=sys.stderr)
        return exit_codes.USAGE if completed.returncode == 2 else exit_codes.FAILED
    return exit_codes.OK
