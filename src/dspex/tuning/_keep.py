"""Layer 3 (tuning): keep an optimizer's chosen values as one batch that ``rollback`` undoes.

For optimizers that write candidate values into the session while they search:
``dspex.tune`` (Optuna) uses it. ``dspex.compile`` (DSPy teleprompters) does not need it: the
candidates live on the teleprompter's copy of the program, and ``dspex.publish`` writes the
compiled values as the run's one batch. Call it inside the optimizer's
``session.optimizing(...)`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from dspex._model import VariableRecord
from dspex.errors import BatchUpdateError, LockedError
from dspex.session import Session

__all__ = ["keep", "lost_lock_plainly"]


@contextlib.contextmanager
def lost_lock_plainly() -> Iterator[None]:
    """Around an optimizer's batch write: a batch refused because the optimizer lost its lock
    (preempted, expired) raises that :class:`LockedError` itself, not the batch error."""
    try:
        yield
    except BatchUpdateError as exc:
        for result in exc.details.get("results", {}).values():
            if isinstance(result, LockedError):
                raise result from exc
        raise


def keep(
    session: Session, before: Mapping[str, VariableRecord], values: Mapping[str, Any]
) -> dict[str, VariableRecord]:
    """Restore the ``before`` values, then write ``values``: two atomic batches.

    After it, the version just before each kept record holds the starting value, so
    ``session.rollback(name, kept[name].version - 1)`` undoes the batch however many versions
    the optimizer wrote meanwhile (history keeps only the latest ones). Returns the kept
    records (empty when ``values`` equal the starting values or are empty).
    """
    start = {name: record.value for name, record in before.items()}
    if {name: session.get(name) for name in start} != start:
        session.update(start, atomic=True)
    if not values or dict(values) == {n: start[n] for n in values}:
        return {}
    results = session.update(values, atomic=True)
    return {n: r for n, r in results.items() if isinstance(r, VariableRecord)}
