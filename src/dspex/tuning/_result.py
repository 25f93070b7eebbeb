"""Layer 3 (tuning): :class:`TuneResult`, what ``dspex.tune`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dspex._model import VariableRecord
from dspex.session import Session

if TYPE_CHECKING:
    import optuna

__all__ = ["TuneResult"]


@dataclass
class TuneResult:
    """The outcome of one tuning run.

    Attributes:
        study: the Optuna study (all trials, also those of earlier runs of a resumed study).
        best_values: the best trial's values (empty when no trial completed).
        best_score: the best trial's mean metric (None when no trial completed).
        kept: the records of the atomic batch that kept ``best_values`` (empty when the best
            values were already the starting values, or nothing completed).
        before: the records of the tuned variables when the run started.
        optimizer_id: the id the run held the optimization lock under.
    """

    study: optuna.study.Study
    best_values: dict[str, Any]
    best_score: float | None
    kept: dict[str, VariableRecord] = field(default_factory=dict)
    before: dict[str, VariableRecord] = field(default_factory=dict)
    optimizer_id: str = ""

    def rollback(self, session: Session) -> dict[str, VariableRecord]:
        """Undo the kept batch: roll each variable back to the version just before it.

        That version holds the starting value (the run restores the starting values in one
        batch before it writes the best ones). Returns the new records; nothing happens when
        nothing was kept.
        """
        return {name: session.rollback(name, r.version - 1) for name, r in self.kept.items()}
