"""Layer 3 (tuning): score one trial's values with the user's metric over the dev set.

:class:`Evaluator` is the picklable unit of work: the program, the metric and the dev set, called
with a trial's pinned records and the indices of the examples to score; it returns one score
per example. It runs in this process (:class:`InProcess`) or in ``dspex.Remote`` workers
(:class:`Workers`, which splits each batch of examples across the pool). A caller's own
``dspex.Remote`` of the program also works (:class:`ProgramPool`): the workers then read the
live session, which holds the trial's values because trials run one at a time under the lock,
and the metric runs here. :func:`score_trial`
walks the dev set in batches and reports the running mean to Optuna after each, so a pruner
can stop a poor trial early on a per-example metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dspex._model import VariableRecord
from dspex.errors import TuningError
from dspex.tuning._pinned import pinned

if TYPE_CHECKING:
    from optuna.trial import Trial

    from dspex.session import Session

__all__ = ["Backend", "Evaluator", "InProcess", "ProgramPool", "Workers", "score_trial"]

Records = Mapping[str, VariableRecord]


def example_inputs(example: Any) -> dict[str, Any]:
    """The keyword arguments of one example: a ``dspy.Example``'s inputs, or a mapping."""
    inputs = getattr(example, "inputs", None)
    if callable(inputs):
        return dict(inputs())
    if isinstance(example, Mapping):
        return dict(example)
    raise TuningError(
        f"dev set example {example!r} is neither a dspy.Example with inputs set "
        "(example.with_inputs(...)) nor a mapping of keyword arguments"
    )


class Evaluator:
    """``program`` run on chosen dev examples and scored by ``metric`` (picklable).

    ``metric(example, prediction)`` is a DSPy-style per-example metric; bool or number.
    """

    def __init__(
        self, program: Callable[..., Any], metric: Callable[..., Any], devset: Sequence[Any]
    ) -> None:
        self.program = program
        self.metric = metric
        self.devset = list(devset)

    def __call__(self, records: Records, indices: Sequence[int]) -> list[float]:
        """Score ``indices`` with ``records`` pinned in the current session."""
        scores: list[float] = []
        with pinned(records):
            for index in indices:
                example = self.devset[index]
                prediction = self.program(**example_inputs(example))
                scores.append(_score(self.metric(example, prediction), index))
        return scores


def _score(value: Any, index: int) -> float:
    """A metric's result as a float: a number or a bool (numpy's too), as a DSPy metric gives.

    Raises:
        TuningError: the metric returned something else (a string, None, a prediction).
    """
    try:
        if not isinstance(value, str | bytes):
            return float(value)
    except (TypeError, ValueError):
        pass
    raise TuningError(
        f"the metric returned {value!r} ({type(value).__name__}) for dev set example {index}; "
        "a metric must return a number or a bool"
    )


class Backend(Protocol):
    """Where an :class:`Evaluator` runs: ``run(records, indices)`` returns the scores."""

    def run(self, records: Records, indices: Sequence[int]) -> list[float]: ...

    def close(self) -> None: ...


class InProcess:
    """Evaluate in the calling thread (which must be in the session)."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def run(self, records: Records, indices: Sequence[int]) -> list[float]:
        """Score ``indices`` here."""
        return self.evaluator(records, indices)

    def close(self) -> None:
        """Nothing to stop."""


class Workers:
    """Evaluate in a ``dspex.Remote`` pool of ``workers`` processes of ``session``.

    Each batch of examples is split into one chunk per worker; the chunks run in parallel, and
    several trials may share the pool at once (their chunks queue).
    """

    def __init__(
        self, evaluator: Evaluator, workers: int, session: Session, timeout: float | None
    ) -> None:
        from dspex.remote import Remote

        self.remote = Remote(evaluator, workers=workers, timeout=timeout, session=session)

    def run(self, records: Records, indices: Sequence[int]) -> list[float]:
        """Score ``indices`` on the workers, in order."""
        size = -(-len(indices) // self.remote.workers)
        chunks = [list(indices[i : i + size]) for i in range(0, len(indices), size)]
        calls = [{"records": dict(records), "indices": chunk} for chunk in chunks]
        results = self.remote.map(calls, progress=False)
        return [score for chunk in results for score in chunk]

    def close(self) -> None:
        """Stop the workers."""
        self.remote.close()


class ProgramPool:
    """Evaluate on a caller's ``dspex.Remote`` of the program; the metric runs here.

    Each call carries the session revision of the trial's write, and the worker catches up to
    it before running, so with one trial at a time (the lock keeps every other writer out) the
    worker reads exactly the trial's values.
    """

    def __init__(self, remote: Any, evaluator: Evaluator) -> None:
        self.remote = remote
        self.evaluator = evaluator

    def run(self, records: Records, indices: Sequence[int]) -> list[float]:
        """Run the program on the pool for ``indices``; score each prediction here."""
        examples = [self.evaluator.devset[i] for i in indices]
        predictions = self.remote.map([example_inputs(e) for e in examples], progress=False)
        metric = self.evaluator.metric
        return [float(metric(e, p)) for e, p in zip(examples, predictions, strict=True)]

    def close(self) -> None:
        """The pool belongs to the caller: leave it running."""


def score_trial(
    trial: Trial, backend: Backend, records: Records, examples: int, batch: int
) -> float:
    """The mean score of ``records`` over ``examples`` dev examples, reported per batch.

    Raises:
        optuna.TrialPruned: the study's pruner stopped the trial after a batch.
    """
    import optuna

    scores: list[float] = []
    for start in range(0, examples, batch):
        scores += backend.run(records, range(start, min(examples, start + batch)))
        mean = sum(scores) / len(scores)
        trial.report(mean, step=len(scores))
        if len(scores) < examples and trial.should_prune():
            raise optuna.TrialPruned(f"pruned after {len(scores)} of {examples} examples")
    return sum(scores) / len(scores)
