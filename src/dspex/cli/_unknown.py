"""Unknown command-line arguments, reported by the sub-command they were given to.

argparse hands a sub-command's unrecognized arguments up to the top-level parser, which then
prints ``usage: dspex [-h] COMMAND ...`` and no hint of which command was meant. Here each
parser is remembered on the namespace it fills, so the error shows the usage of the innermost
command (``dspex serve``, ``dspex vars set``) and suggests the flag a typo was close to.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterator, Sequence
from typing import NoReturn

__all__ = ["command_parsers", "mark_parsers", "refuse"]

_KEY = "cli_parser"


def mark_parsers(parser: argparse.ArgumentParser) -> None:
    """Make every sub-command parser under ``parser`` record itself on its namespace."""
    for sub in command_parsers(parser):
        sub.set_defaults(**{_KEY: sub})


def refuse(
    parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: Sequence[str]
) -> NoReturn:
    """Exit with status 2, naming ``unknown`` in the usage of the command they were given to."""
    command: argparse.ArgumentParser = getattr(args, _KEY, parser)
    flags = [flag for action in command._actions for flag in action.option_strings]
    hints = []
    for word in unknown:
        close = difflib.get_close_matches(word.partition("=")[0], flags, n=1)
        if word.startswith("-") and close:
            hints.append(f"{word.partition('=')[0]}: did you mean {close[0]}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


def command_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every sub-command parser under ``parser`` (``serve``, ``vars``, ``vars set``...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from command_parsers(sub)
