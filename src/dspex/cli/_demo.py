"""``dspex demo``: show dspex doing real work, step by step (local mode, then DSPy workers)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Register the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the guided demo (offline, no API keys)",
        description="Register typed variables, change and watch them live, see a bad value "
        "and a stale write refused, and roll back; then run a DSPy program in this process and "
        "in two worker processes, and tune its variables live with an Optuna study (dspex.tune) "
        "under an optimization lock. All in a real session, offline: the LM is a simulation "
        "that scores instructions by literal phrases of one word list (the demo says which).",
    )
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run every demo step (or list them)."""
    from dspex.demo import STEPS, run_demo

    if args.list:
        for number, step in enumerate(STEPS, start=1):
            print(f"{number}. {step.title}")
        return 0
    run_demo()
    return 0
