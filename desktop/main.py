"""The ``visiondesk`` entry point: the window with no arguments, the command line with some."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        from desktop.cli import main as cli_main

        return cli_main(args)
    from desktop.app import main as app_main

    return app_main([])


if __name__ == "__main__":
    sys.exit(main())
