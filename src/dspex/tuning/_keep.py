"""Layer 3 (tuning): keep an optimizer's chosen values as one batch that ``rollback`` undoes.

Shared by every optimizer that drives session variables: ``dspex.tune`` (Optuna) uses it, and
the DSPy teleprompter path is meant to use it too, once binding's ``publish`` turns compiled
instructions/demos into variable values (issue 14, deliverable 2). Call it inside the
optimizer's ``session.optimizing(...)`` block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspex._model import VariableRecord
from dspex.session import Session

__all__ = ["keep"]


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
