"""Layer 3 demo: run the demo steps in one session and print them with rich."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.rule import Rule

from dspex.demo._dspy import DSPY_STEPS
from dspex.demo._local import LOCAL_STEPS
from dspex.demo._steps import DemoRun, DemoStep
from dspex.session import Session

__all__ = ["STEPS", "run_demo"]

STEPS: list[DemoStep] = [*LOCAL_STEPS, *DSPY_STEPS]
"""Every step of ``dspex demo``, in order: local mode, then DSPy in process and in workers
(later capabilities append theirs)."""


def run_demo(console: Console | None = None, steps: Sequence[DemoStep] = STEPS) -> DemoRun:
    """Run ``steps`` in a fresh local session; return the finished run (for inspection)."""
    console = console or Console()
    console.print(Rule("[bold]dspex demo[/bold]: typed, versioned, watchable variables"))
    with Session() as session:
        run = DemoRun(console, session)
        try:
            for number, step in enumerate(steps, start=1):
                console.print(Rule(f"{number}. {step.title}", align="left"))
                step.run(run)
        finally:
            if run.watcher is not None:
                run.watcher.stop()
    console.print(Rule("done"))
    return run
