"""Layer 3 demo: the DSPy steps (a Program in process, then in workers, then tuned live).

The same :class:`~dspex.demo._program.DemoQA` object runs in process, then through
``dspex.Remote(workers=2)`` (which promotes the session to its embedded store), and finally
``dspex.tune`` runs an Optuna study under an optimization lock, writing each trial's values to
the session and scoring them on the bundled dev set with the workers. DSPy and the worker
machinery are imported inside the steps, so ``dspex demo --list`` stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from dspex.demo._steps import DemoRun, DemoStep, show_value
from dspex.demo._tune import OPTIMIZER_ID, VARIABLES, TunedTrial, describe, run_study

__all__ = ["DSPY_STEPS"]

_VARIABLES = VARIABLES


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
    """An Optuna study (``dspex.tune``) under an optimization lock, evaluated by the workers."""
    remote = run.notes["remote"]
    session = run.session
    pids_before = list(remote.pids)
    start = {n: session.get(n) for n in _VARIABLES}
    with session.watch(*_VARIABLES) as updates:
        trials = run_study(run, remote)
        seen = _drain(updates)
    run.notes["trials"] = trials
    progress = [u.record.lock for u in seen if u.kind == "lock" and u.record.lock]
    last = dict(progress[-1].get("progress") or {}) if progress else {}
    run.say(
        f"progress published on the lock by {OPTIMIZER_ID!r} after every trial; the last: "
        f"trial {last.get('trial')}, score {_percent(last.get('score'))}, "
        f"best {_percent(last.get('best'))} (trial {last.get('best_trial')})"
    )
    pruned = sum(1 for t in trials if t.state == "pruned")
    same_workers = list(remote.pids) == pids_before
    run.say(
        f"{len(trials)} trials ({pruned} pruned early) ran on the same {remote.workers} workers "
        f"(restarted: {not same_workers}); a watcher saw "
        f"{sum(1 for u in seen if u.kind == 'set')} writes of trial values"
    )
    run.notes["start_values"] = start
    prediction = remote(question="What is 17 + 25?")
    run.say(f"[dim]a worker call now: {prediction.reasoning}[/dim]")


def _drain(updates: Any) -> list[Any]:
    seen = []
    while (update := updates.poll(timeout=0.2)) is not None:
        seen.append(update)
    return seen


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def results_table(run: DemoRun) -> None:
    """Every trial with its values, the revision it was written at and its score."""
    trials: list[TunedTrial] = run.notes["trials"]
    result = run.notes["tune_result"]
    best = result.study.best_trial.number
    table = Table(title="Optuna trials: values written to the session and dev-set scores")
    columns = ("trial", "temperature", "model", "revision", "score", "instructions")
    table.caption = "pruned: stopped early by the median pruner (score over the examples run)"
    for column in columns:
        table.add_column(column, justify="right" if column in ("trial", "score") else "left")
    for trial in trials:
        mark = "[green]best[/green] " if trial.number == best else ""
        score = "-" if trial.score is None else f"{trial.score:.1f}%"
        if trial.state == "pruned":
            score = f"{score} pruned"
        values = {n: _cell(trial.values.get(n)) for n in _VARIABLES}
        table.add_row(
            mark + str(trial.number), values["temperature"],
            values["model"].removeprefix("dspex/"), str(trial.revision), score,
            values["instructions"],
        )  # fmt: skip
    run.console.print(table)
    session = run.session
    kept = result.kept
    run.say(
        f"kept the best setting ({_percent(result.best_score)}) in one atomic batch "
        f"(revisions {sorted(r.revision for r in kept.values())}): "
        f"{describe({n: session.get(n) for n in _VARIABLES})}"
    )
    run.say(f"optimization lock released: {session.variable('temperature').lock is None}")
    undone = result.rollback(session)
    back = {n: r.value for n, r in undone.items()}
    run.say(f"rollback of that batch restores the start: {describe(back)}")
    run.notes["rolled_back"] = back
    remote = run.notes.pop("remote")
    remote.close()
    run.say("workers closed; the store server stops when the session closes")


DSPY_STEPS: list[DemoStep] = [
    DemoStep("A DSPy Program in this process", run_in_process),
    DemoStep("The same Program in two worker processes", run_in_workers),
    DemoStep("An Optuna study under an optimization lock, evaluated by the workers", optimize),
    DemoStep("Trials, scores, the kept batch and its rollback", results_table),
]
"""The DSPy part of ``dspex demo``, in order (after the local steps)."""
