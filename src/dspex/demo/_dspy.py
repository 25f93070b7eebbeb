"""Layer 3 demo: the DSPy steps (a Program in process, then in workers, then tuned live).

The same :class:`~dspex.demo._program.DemoQA` object runs in process, then through
``dspex.Remote(workers=2)`` (which promotes the session to its embedded store), and finally a
small grid search holds an optimization lock while it sets the variables, scoring each setting
with ``dspy.Evaluate`` on the bundled dev set, evaluated by the workers. DSPy and the worker
machinery are imported inside the steps, so ``dspex demo --list`` stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from dspex.demo._optimize import Trial, grid_search
from dspex.demo._steps import DemoRun, DemoStep, show_value

__all__ = ["DSPY_STEPS"]

_VARIABLES = ("temperature", "instructions", "model")


@dataclass
class _Answers:
    """What a batch of sample questions got back."""

    answers: list[str]
    reasonings: list[str]


def _ask(run: DemoRun, program: Any) -> _Answers:
    from dspex.demo._program import SAMPLE_QUESTIONS

    predictions = [program(question=q) for q in SAMPLE_QUESTIONS]
    for question, prediction in zip(SAMPLE_QUESTIONS, predictions, strict=True):
        run.say(f"[cyan]Q[/cyan] {question}  [cyan]A[/cyan] [bold]{prediction.answer}[/bold]")
    return _Answers([p.answer for p in predictions], [p.reasoning for p in predictions])


def run_in_process(run: DemoRun) -> None:
    """Build the Program in the session and answer a few questions in this process."""
    from dspex.demo._program import DemoQA

    session = run.session
    program = DemoQA()
    run.notes["program"] = program
    values = ", ".join(f"{n}={show_value(session.get(n), 40)}" for n in _VARIABLES)
    run.say(f"DemoQA binds temperature, instructions and model to ChainOfThought; now {values}")
    answers = _ask(run, program)
    run.notes["local_answers"] = answers
    run.say(f"[dim]reasoning: {answers.reasonings[0]}[/dim]")
    run.say(f"backend [bold]{session.backend}[/bold]: no server, no serialization")


def run_in_workers(run: DemoRun) -> None:
    """Ship the same Program to two worker processes; the session is promoted on the way."""
    from dspex.remote import Remote

    session = run.session
    history_before = [r.version for r in session.history("temperature")]
    remote = Remote(run.notes["program"], workers=2)
    run.notes["remote"] = remote
    pids = ", ".join(str(pid) for pid in remote.pids)
    run.say(
        f"dspex.Remote(program, workers=2) started worker pids {pids} (this process is "
        f"{os.getpid()}); the session is now backend [bold]{session.backend}[/bold] at "
        f"{session.address}"
    )
    history_after = [r.version for r in session.history("temperature")]
    run.say(
        f"nothing was copied: the embedded store serves this session's own provider, so "
        f"temperature keeps versions {history_after[0]}..{history_after[-1]} "
        f"(before: {history_before[0]}..{history_before[-1]})"
    )
    answers = _ask(run, remote)
    same = answers.answers == run.notes["local_answers"].answers
    run.say(f"the workers' answers equal the in-process ones: [bold]{same}[/bold]")
    record = session.set("temperature", 0.2)
    run.say(f"set temperature = 0.2 here (version {record.version}); the next worker call:")
    reasoning = remote(question="What is 17 + 25?").reasoning
    run.say(f"[dim]reasoning from a worker: {reasoning}[/dim]")


def optimize(run: DemoRun) -> None:
    """Grid search over the variables' constraints under an optimization lock."""
    remote = run.notes["remote"]
    pids_before = list(remote.pids)
    trials = grid_search(run, remote)
    run.notes["trials"] = trials
    same_workers = list(remote.pids) == pids_before
    run.say(
        f"{len(trials)} evaluations of {trials[0].examples} dev examples ran on the same "
        f"{remote.workers} workers (restarted: {not same_workers}); each call read the values "
        "set just before it"
    )
    prediction = remote(question="What is 17 + 25?")
    run.say(f"[dim]a worker call now: {prediction.reasoning}[/dim]")


def results_table(run: DemoRun) -> None:
    """The variable history written by the optimizer, with the score of every setting."""
    trials: list[Trial] = run.notes["trials"]
    best = max(trials, key=lambda t: t.score)
    table = Table(title="grid search: variable history and dev-set scores")
    for column in ("trial", "variable", "value", "version", "revision", "score"):
        table.add_column(column, justify="right" if column in ("trial", "score") else "left")
    for trial in trials:
        mark = " [green]best[/green]" if trial is best else ""
        table.add_row(
            str(trial.number), trial.name, show_value(trial.value, 48), str(trial.version),
            str(trial.revision), f"{trial.score:.1f}%{mark}",
        )  # fmt: skip
    run.console.print(table)
    session = run.session
    final = ", ".join(f"{n}={show_value(session.get(n), 60)}" for n in _VARIABLES)
    run.say(f"kept the best setting ({best.score:.1f}%): {final}")
    lock = session.variable("temperature").lock
    run.say(f"optimization lock released: {lock is None}")
    remote = run.notes.pop("remote")
    remote.close()
    run.say("workers closed; the store server stops when the session closes")


DSPY_STEPS: list[DemoStep] = [
    DemoStep("A DSPy Program in this process", run_in_process),
    DemoStep("The same Program in two worker processes", run_in_workers),
    DemoStep("Grid search under an optimization lock, evaluated by the workers", optimize),
    DemoStep("Variable history and scores", results_table),
]
"""The DSPy part of ``dspex demo``, in order (after the local steps)."""
