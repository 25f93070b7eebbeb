"""The ``dspex`` command: one sub-command module per job, each adding its own parser.

Sub-command modules live beside this file and expose ``add_parser(subparsers)``; each parser
sets ``func`` to the function that runs it and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dspex.cli import _unknown
from dspex.errors import DspexError

__all__ = ["main"]

# Order is the order in `dspex --help`.
_COMMANDS = (
    "dspex.cli._demo",
    "dspex.cli._serve",
    "dspex.cli._sessions",
    "dspex.cli._vars",
    "dspex.cli._bench",
    "dspex.cli._dashboard",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser from every sub-command module."""
    parser = argparse.ArgumentParser(
        prog="dspex", description="Session-scoped, typed, watchable variables for DSPy."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _COMMANDS:
        importlib.import_module(module_name).add_parser(subparsers)
    _unknown.mark_parsers(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dspex`` command line; returns the process exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _unknown.refuse(parser, args, unknown)
    try:
        code: int = args.func(args)
    except DspexError as exc:
        print(f"dspex: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
