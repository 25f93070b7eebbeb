"""Layer 3 demo: a small grid search that tunes session variables while workers evaluate.

It sweeps one variable at a time over candidates taken from the variable's own constraints
(evenly spaced points between ``min`` and ``max``, the ``choices``; a few written candidates for
free text), keeps the best value of each before moving on, and scores every setting with
``dspy.Evaluate`` on the bundled dev set, run through ``dspex.Remote`` workers. It holds an
optimization lock on the variables for the whole search and reports its progress on the lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dspex._model import VariableRecord
from dspex.demo._steps import DemoRun, show_value

__all__ = ["OPTIMIZER_ID", "Trial", "candidates", "grid_search"]

OPTIMIZER_ID = "grid-search"
TEMPERATURE_POINTS = 5


@dataclass(frozen=True)
class Trial:
    """One evaluated setting: the variable just written, its record numbers, and the score."""

    number: int
    name: str
    value: Any
    version: int
    revision: int
    score: float
    examples: int


def candidates(record: VariableRecord) -> list[Any]:
    """The values the search tries for one variable, from its type and constraints."""
    from dspex.demo._program import INSTRUCTION_CANDIDATES

    constraints = record.constraints
    if record.type == "choice":
        return list(constraints["choices"])
    if record.type == "float":
        low, high = float(constraints.get("min", 0.0)), float(constraints.get("max", 1.0))
        step = (high - low) / (TEMPERATURE_POINTS - 1)
        return [round(low + i * step, 3) for i in range(TEMPERATURE_POINTS)]
    limit = constraints.get("max_length")
    return [c for c in INSTRUCTION_CANDIDATES if limit is None or len(c) <= limit]


@contextlib.contextmanager
def _quiet_dspy_evaluate() -> Iterator[None]:
    """Silence ``dspy.Evaluate``'s per-run INFO log line; the demo prints its own."""
    logger = logging.getLogger("dspy.evaluate.evaluate")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _progress(run: DemoRun, total: int) -> Iterator[Any]:
    """A progress bar over the trials when the console is a terminal (nothing otherwise)."""
    if not run.console.is_terminal:
        yield lambda: None
        return
    bar = Progress(
        TextColumn("  grid search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=run.console, transient=True,
    )  # fmt: skip
    task = bar.add_task("trials", total=total)
    with bar:
        yield lambda: bar.advance(task)


def grid_search(run: DemoRun, remote: Any, order: tuple[str, ...] = ()) -> list[Trial]:
    """Tune ``order`` (default temperature, instructions, model) one variable at a time.

    Returns:
        Every evaluated setting, the starting point first.
    """
    import dspy

    from dspex.sim import answer_match, load_devset

    session = run.session
    names = order or ("temperature", "instructions", "model")
    devset = load_devset()
    evaluate = dspy.Evaluate(
        devset=devset, metric=answer_match, num_threads=remote.workers, display_progress=False
    )
    grid = {name: candidates(session.variable(name)) for name in names}
    total = 1 + sum(len(values) for values in grid.values())
    run.say(
        "candidates from the constraints: "
        + "; ".join(f"{n}: {len(v)} values" for n, v in grid.items())
        + f"; {total} evaluations of {len(devset)} dev examples, through the workers"
    )
    trials: list[Trial] = []

    def score(record: VariableRecord) -> Trial:
        result = evaluate(remote)
        trial = Trial(
            len(trials), record.name, record.value, record.version, record.revision,
            float(result.score), len(devset),
        )  # fmt: skip
        trials.append(trial)
        return trial

    with (
        session.optimizing(*names, optimizer_id=OPTIMIZER_ID) as lock,
        _quiet_dspy_evaluate(),
        _progress(run, total) as tick,
    ):
        _refused_while_locked(run)
        best = score(session.variable(names[0]))
        tick()
        run.say(f"start: {_setting(session, names)} -> [bold]{best.score:.1f}%[/bold]")
        for name in names:
            kept = session.variable(name)
            for value in grid[name]:
                trial = score(session.set(name, value))
                tick()
                if trial.score > best.score:
                    best, kept = trial, session.variable(name)
                lock.report(
                    iteration=trial.number,
                    best_score=best.score,
                    best_value=_best(session, names, name, kept),
                )
            if session.get(name) != kept.value:
                session.set(name, kept.value)
            run.say(
                f"{name}: tried {len(grid[name])}, kept {show_value(kept.value, 60)} "
                f"-> best so far [bold]{best.score:.1f}%[/bold]"
            )
        progress = session.variable(names[0]).lock
        if progress is not None:
            run.say(f"progress published on the lock: {dict(progress.get('progress') or {})}")
    return trials


def _best(session: Any, names: tuple[str, ...], name: str, kept: VariableRecord) -> dict[str, Any]:
    values = {n: session.get(n) for n in names}
    values[name] = kept.value
    return values


def _setting(session: Any, names: tuple[str, ...]) -> str:
    return ", ".join(f"{n}={show_value(session.get(n), 40)}" for n in names)


def _refused_while_locked(run: DemoRun) -> None:
    """Show another process (``dspex vars set``) refused while the optimizer holds the locks."""
    import os
    import subprocess
    import sys

    session = run.session
    if session.address is None:
        return
    args = ["vars", "set", "--store", session.address, "--session", session.session_id]
    args += ["temperature", "1.0"]
    env = {**os.environ, "NO_COLOR": "1"}
    if session.store_token is not None:
        env["DSPEX_TOKEN"] = session.store_token
    command = [sys.executable, "-c", "import sys; from dspex.cli import main; sys.exit(main())"]
    completed = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    said = (completed.stderr or completed.stdout).strip().splitlines()
    run.say(
        "another process runs `dspex vars set ... temperature 1.0` -> "
        f"exit {completed.returncode}: [yellow]{said[-1] if said else ''}[/yellow]"
    )
