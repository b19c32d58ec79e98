"""The ``visiondesk`` command line: the engine's capabilities from a terminal."""

from __future__ import annotations

import argparse
import os
import sys

from desktop.cli import chat, data_folder, exit_codes, extract, finetune, models, search
from engine.protocol import ENGINE_VERSION


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visiondesk",
        description="Vision-language models on your own GPU. Run without arguments for the app.",
    )
    parser.add_argument("--version", action="version", version=f"visiondesk {ENGINE_VERSION}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    chat.add_parser(subparsers)
    extract.add_parser(subparsers)
    models.add_parser(subparsers)
    search.add_parser(subparsers)
    finetune.add_parser(subparsers)
    return parser


def main(argv: list[str]) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here rather than at exit, so that a closed pipe is caught below
        return code
    except BrokenPipeError:
        # The reader of the output has gone (`visiondesk … | head`): stop quietly, as other
        # tools do. stdout now goes nowhere, so that Python's own flush at exit cannot fail
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.FAILED


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for usage errors
        return int(exc.code or 0)
    try:
        if getattr(args, "needs_data_folder", True):
            data_folder.check()
        return int(args.run(args))
    except data_folder.DataFolderError as exc:
        print(f"visiondesk: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    except KeyboardInterrupt:
        print("visiondesk: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
