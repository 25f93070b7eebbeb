"""Layer 3 demo: local-mode steps (register, change, watch live, reject, conflict, roll back).

Everything here runs against a real in-process session; nothing is simulated or pre-printed.
"""

from __future__ import annotations

import numpy as np
from rich.table import Table

from dspex import errors
from dspex._model import Choice
from dspex.demo._steps import DemoRun, DemoStep, LiveWatcher, show_value

__all__ = ["LOCAL_STEPS"]


def register_variables(run: DemoRun) -> None:
    """Register one variable of several types, each with its constraints."""
    session = run.session
    run.say(f"session [bold]{session.session_id}[/bold], backend [bold]{session.backend}[/bold]")
    session.register("temperature", float, 0.7, min=0.0, max=2.0)
    session.register("instructions", str, "Answer in one sentence.", max_length=200)
    session.register(
        "model", Choice("dspex/sim-small", "dspex/sim", "dspex/sim-large"), "dspex/sim"
    )
    session.register("max_tokens", int, 256, min=1, max=4096)
    session.register("demos", "json", [{"question": "2+2?", "answer": "4"}], max_length=4000)
    session.register("query_embedding", "embedding", [0.1, 0.2, 0.3, 0.4], dimensions=4)
    session.register("mask", "tensor", np.ones((2, 3), np.int8), shape=[2, 3], dtype="int8")
    table = Table(title="registered variables")
    for column in ("name", "type", "value", "constraints", "version"):
        table.add_column(column)
    for record in session.list():
        constraints = ", ".join(f"{k}={show_value(v, 40)}" for k, v in record.constraints.items())
        table.add_row(
            record.name, record.type, show_value(record.value, 45), constraints,
            str(record.version),
        )  # fmt: skip
    run.console.print(table)


def start_watcher(run: DemoRun) -> None:
    """Watch every variable from a separate thread, printing updates as they arrive."""
    watcher = LiveWatcher(run.console, run.session.watch())
    watcher.start()
    run.watcher = watcher
    run.say("a watcher thread now prints every change live, in revision order")


def change_values(run: DemoRun) -> None:
    """Set one value, then several at once in an atomic batch."""
    session = run.session
    record = run.changed(session.set("temperature", 0.2))
    run.say(f"set temperature = 0.2 -> version {record.version}, revision {record.revision}")
    results = session.update({"temperature": 0.9, "instructions": "Think step by step."})
    for result in results.values():
        if isinstance(result, errors.DspexError):  # update() raises instead; kept for typing
            raise result
        run.changed(result)
    run.say("atomic batch: temperature = 0.9 and new instructions, one revision each")


def reject_bad_values(run: DemoRun) -> None:
    """Refuse values that break the rules, and show that nothing changed."""
    session = run.session
    before = session.variable("temperature")
    for name, value in (("temperature", 3.5), ("model", "gpt-5"), ("max_tokens", "many")):
        try:
            session.set(name, value)
        except errors.VariableValueError as exc:
            run.say(f"[red]refused[/red] {type(exc).__name__}: {exc}")
    try:
        session.update({"temperature": 1.0, "max_tokens": 0})
    except errors.BatchUpdateError as exc:
        run.say(f"[red]refused batch[/red] {type(exc).__name__}: {exc}")
    after = session.variable("temperature")
    kept = (after.value, after.version) == (before.value, before.version)
    run.say(
        f"temperature is {'still ' if kept else ''}{after.value} at version {after.version} "
        f"(was {before.value} at version {before.version}): "
        + ("nothing was half applied" if kept else "[red]a refused write changed it[/red]")
    )


def version_conflict(run: DemoRun) -> None:
    """Two optimizers read the same version; the second write is refused as stale."""
    session = run.session
    seen_by_a = session.variable("temperature")
    seen_by_b = session.variable("temperature")
    run.say(f"optimizers A and B both read temperature at version {seen_by_a.version}")
    record = run.changed(session.set("temperature", 0.5, expected_version=seen_by_a.version))
    run.say(f"A writes 0.5 with expected_version={seen_by_a.version} -> version {record.version}")
    try:
        session.set("temperature", 1.2, expected_version=seen_by_b.version)
    except errors.VersionConflictError as exc:
        run.say(f"[yellow]conflict[/yellow] B: {type(exc).__name__}: {exc}")
    fresh = session.variable("temperature")
    record = run.changed(session.set("temperature", 1.2, expected_version=fresh.version))
    run.say(f"B re-reads version {fresh.version} and retries -> version {record.version}")


def history_and_rollback(run: DemoRun) -> None:
    """Show the kept history, then roll back: the old value becomes a new version."""
    session = run.session
    table = Table(title="history of temperature")
    for column in ("version", "revision", "value", "writer"):
        table.add_column(column)
    for record in session.history("temperature"):
        table.add_row(str(record.version), str(record.revision), repr(record.value), record.writer)
    run.console.print(table)
    record = run.changed(session.rollback("temperature", 1))
    run.say(
        f"rollback to version 1 wrote {record.value} as a new version {record.version} "
        "(history is never rewritten)"
    )


def stop_watcher(run: DemoRun) -> None:
    """Stop the watcher and report what it saw."""
    if run.watcher is None:
        return
    run.watcher.stop()
    revisions = [update.revision for update in run.watcher.received]
    run.say(
        f"the watcher received {len(revisions)} updates, revisions {revisions[0]}..{revisions[-1]}"
        " in order, none missing"
        if revisions and revisions == list(range(revisions[0], revisions[-1] + 1))
        else f"the watcher received {len(revisions)} updates: {revisions}"
    )
    run.watcher = None


LOCAL_STEPS: list[DemoStep] = [
    DemoStep("Register typed variables", register_variables),
    DemoStep("Watch them from another thread", start_watcher),
    DemoStep("Change values", change_values),
    DemoStep("Reject bad values", reject_bad_values),
    DemoStep("Optimistic concurrency: a version conflict", version_conflict),
    DemoStep("History and rollback", history_and_rollback),
    DemoStep("Stop watching", stop_watcher),
]
"""The local-mode part of ``dspex demo``, in order."""
