"""``python -m engine.testing make-demo DIR [--family F] [--seed N]``: write a tiny demo model."""

from __future__ import annotations

import argparse
import sys

from .tiny import FAMILIES, PROMPT_FORMAT, build_tiny_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("make-demo", help="write a tiny random-weight model to DIR")
    demo.add_argument("dir", help="folder to write the model into (created)")
    # choices: an unknown family is a usage error (exit 2), which the desktop CLI reports as such.
    demo.add_argument("--family", default="llava", choices=FAMILIES)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_model(args.family, args.dir, seed=args.seed)
    print(path)
    if PROMPT_FORMAT[args.family] == "embedding":
        what = "it ranks pictures in random order. Use it to try search offline."
    else:
        what = "it answers with random text. Use it to try the interface offline."
    print(f"A tiny model with RANDOM weights: {what}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
