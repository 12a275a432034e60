"""The `ichviewer` command: builds the parser from the thin modules in `ichviewer.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ichviewer import __version__

# Each module has `register(subparsers)`, adding its subcommands with
# `set_defaults(func=...)`; the func takes the parsed args and returns an exit code.
# Modules import their heavy dependencies inside the handlers so `--help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "ichviewer.commands.io",
    "ichviewer.commands.gui",
    "ichviewer.commands.phantom",
    "ichviewer.commands.evaluate",
    "ichviewer.commands.review",
    "ichviewer.commands.infer",
    "ichviewer.commands.train",
    "ichviewer.commands.atlas",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ichviewer",
        description="ICH Viewer: read non-contrast head CT for intracranial haemorrhage.",
    )
    parser.add_argument("--version", action="version", version=f"ichviewer {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("ichviewer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
