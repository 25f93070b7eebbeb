"""``dspex bench [--json] [SUITE ...]``: run benchmark suites and print their figures.

With ``--json`` it prints exactly one JSON object (machine info, the suites run, every figure
and each target's verdict) so scripts and CI can read it; otherwise a table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from typing import Any

from dspex.bench import SUITES, run_suites

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Register the ``bench`` sub-command."""
    parser = subparsers.add_parser(
        "bench",
        help="measure dspex costs beside baselines (dict access, raw transport)",
        description="Run benchmark suites; every figure is measured beside a baseline in the "
        f"same run. Suites: {', '.join(SUITES)} (all when none is named).",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("suites", nargs="*", metavar="SUITE", help="suites to run (default: all)")
    parser.set_defaults(func=run)


def machine_info() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def check_targets(suites: list[str], figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each suite's ``TARGETS`` evaluated against the figures: ``{figure: {target, met}}``."""
    verdicts: dict[str, dict[str, Any]] = {}
    for suite in suites:
        targets = getattr(importlib.import_module(SUITES[suite]), "TARGETS", {})
        for figure, (text, check) in targets.items():
            met = figure in figures and figures[figure] is not None and bool(check(figures))
            verdicts[figure] = {"target": text, "met": met}
    return verdicts


def run(args: argparse.Namespace) -> int:
    """Run the named suites and print the result; exit code 2 for an unknown suite."""
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        print(
            f"dspex bench: unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}",
            file=sys.stderr,
        )
        return 2
    suites = list(dict.fromkeys(args.suites)) or list(SUITES)
    figures = run_suites(suites)
    targets = check_targets(suites, figures)
    if args.json:
        result = {"machine": machine_info(), "suites": suites, **figures, "targets": targets}
        print(json.dumps(result, sort_keys=False))
    else:
        _print_table(suites, figures, targets)
    return 0


def _print_table(
    suites: list[str], figures: dict[str, Any], targets: dict[str, dict[str, Any]]
) -> None:
    from rich.console import Console
    from rich.table import Table

    info = machine_info()
    table = Table(
        title=f"dspex bench: {', '.join(suites)}",
        caption=f"Python {info['python']} ({info['implementation']}), "
        f"{info['cpu_count']} CPUs, {info['platform']}",
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    notes: list[str] = []
    for name, value in figures.items():
        if isinstance(value, str):  # descriptions (what path was measured) go below the table
            notes.append(f"{name}: {value}")
            continue
        verdict = targets.get(name)
        target = ""
        if verdict is not None:
            mark = "[green]met[/green]" if verdict["met"] else "[red]MISSED[/red]"
            target = f"{verdict['target']}  {mark}"
        table.add_row(name, _format(value), target)
    console = Console()
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
