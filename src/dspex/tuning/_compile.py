"""Layer 3 (tuning): ``dspex.compile``, any DSPy teleprompter on a bound program, published live.

One run: find the session variables bound to the program's instructions, demos and LM-keyword
hooks (what a teleprompter can change; a bound ``lm`` choice is not); take the optimization lock
on them; run ``teleprompter.compile(...)`` on a copy of the program, with its progress published
on the lock; then :func:`dspex.publish` the compiled values in one atomic batch, still as the
lock's holder. The teleprompter never writes the session while it searches (its candidates live
on its own copy of the program), so that batch is the run's only write, and
:meth:`CompileResult.rollback` undoes it. With ``workers=N`` the untraced calls (``Evaluate``)
run on a ``dspex.Remote`` pool (see :mod:`dspex.tuning._dispatch`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

from dspex._model import VariableRecord
from dspex.binding import BoundModule, Published, publish
from dspex.errors import TuningError
from dspex.session import Session, current_session
from dspex.tuning._dispatch import Pool, dispatching, undispatched
from dspex.tuning._keep import lost_lock_plainly

__all__ = ["CompileResult", "compile", "compiled_variables"]


@dataclass(frozen=True)
class CompileResult:
    """The outcome of :func:`compile`.

    Attributes:
        program: the compiled program the teleprompter returned; after the publish its bound
            hooks follow the session's variables again (which now hold its values).
        published: what :func:`dspex.publish` wrote (``records``: the new records of the
            variables that changed; ``previous``: their values before).
        optimizer_id: the id the run held the optimization lock under.
        remote_calls: program calls that ran on the workers (0 in process).
    """

    program: Any
    published: Published
    optimizer_id: str
    remote_calls: int = 0

    @property
    def records(self) -> dict[str, VariableRecord]:
        """Variable name -> the record the publish batch wrote (empty: nothing changed)."""
        return dict(self.published.records)

    def rollback(self) -> dict[str, Any]:
        """Write the values from before the publish back, as one atomic batch.

        Raises:
            BatchUpdateError: a variable changed since the publish (nothing was written).
        """
        return self.published.rollback()


def compile(  # DSPy's verb for running a teleprompter
    program: Any,
    teleprompter: Any,
    *,
    trainset: Sequence[Any],
    workers: int = 0,
    optimizer_id: str | None = None,
    policy: str = "fail",
    lock_timeout: float | None = None,
    worker_timeout: float | None = None,
    session: Session | None = None,
    **compile_kwargs: Any,
) -> CompileResult:
    """Run a DSPy teleprompter on a bound program and publish what it compiled into the session.

    Args:
        program: a ``dspy.Module`` with instructions, demos or LM keywords bound to session
            variables (:func:`dspex.bind`, or a ``dspex.Program``).
        teleprompter: any DSPy optimizer (``BootstrapFewShot``, ``COPRO``, ``MIPROv2``,
            ``SIMBA``, ``GEPA``...), configured as in DSPy (metric, ``num_threads``...).
        trainset: passed to ``teleprompter.compile``, as are ``compile_kwargs`` (``valset``,
            ``num_trials``, ``eval_kwargs``...).
        workers: 0 runs everything in this process; N starts a ``dspex.Remote`` pool of N
            processes (closed at the end) that runs every program call the teleprompter makes
            without recording a trace (its ``Evaluate`` scoring, ``num_threads`` at a time)
            with the candidate's values; traced calls (bootstrapping) and the metric run here.
        optimizer_id: the lock holder's id (default ``"dspy:<teleprompter class>"``).
        policy, lock_timeout: what to do when another optimizer holds one of the variables
            (``"fail"``, ``"wait"`` up to ``lock_timeout`` seconds, ``"preempt"``).
        worker_timeout: seconds one worker call may run.
        session: default the current session.

    Returns:
        The compiled program and the published batch (``rollback()`` undoes it).

    Raises:
        TuningError: bad arguments, or no variable is bound to a hook a teleprompter changes
            (nothing was started).
        LockedError: another optimizer holds a variable, or took it over mid-run (nothing was
            published).
        BindingError, BatchUpdateError: the compiled values cannot be published (nothing was).
        Exception: whatever the teleprompter raised (nothing was published).
    """
    session = session if session is not None else current_session()
    _check(teleprompter, trainset, workers)
    names = compiled_variables(program)
    optimizer = optimizer_id or f"dspy:{type(teleprompter).__name__}"
    with session.optimizing(
        *names, optimizer_id=optimizer, policy=policy, timeout=lock_timeout
    ) as lock:
        progress = _Progress(lock, type(teleprompter).__name__)
        with _student(program, workers, session, worker_timeout) as (student, pool):
            progress.pool = pool
            progress.report("compiling")
            with dspy.context(callbacks=[*dspy.settings.callbacks, progress]):
                compiled = teleprompter.compile(student, trainset=trainset, **compile_kwargs)
            calls = 0 if pool is None else pool.calls
        progress.report("publishing")
        published = _publish(undispatched(compiled))
        progress.report("published", changed=sorted(published.records))
    return CompileResult(compiled, published, optimizer, calls)


def compiled_variables(program: Any) -> list[str]:
    """The session variables bound to hooks a teleprompter changes inside ``program``.

    Instructions, demos and LM keywords (``temperature``, ``config=...``); not a bound ``lm``
    choice, which no teleprompter assigns.

    Raises:
        TuningError: ``program`` is not a ``dspy.Module`` or has no such variable.
    """
    if not isinstance(program, dspy.Module):
        raise TuningError(f"dspex.compile needs a bound dspy.Module, got {type(program).__name__}")
    names: set[str] = set()
    for _, module in [("", program), *program.named_sub_modules()]:
        if isinstance(module, BoundModule):
            names.update(n for hook, n in module.bindings.items() if hook != "lm")
    if not names:
        raise TuningError(
            f"{type(program).__name__} has no instructions, demos or LM keyword bound to a "
            "session variable, so a teleprompter would compile nothing to publish; bind them "
            "first, e.g. dspex.bind(module, instructions=..., demos=...)"
        )
    return sorted(names)


def _check(teleprompter: Any, trainset: Sequence[Any], workers: int) -> None:
    if isinstance(teleprompter, type):
        name = teleprompter.__name__
        raise TuningError(
            f"teleprompter must be a configured DSPy optimizer, got the class {name}; create "
            f"one with its settings first, e.g. dspy.{name}(...)"
        )
    if not callable(getattr(teleprompter, "compile", None)):
        raise TuningError(
            f"teleprompter must be a DSPy optimizer with a compile() method, got {teleprompter!r}"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise TuningError(f"workers must be an integer >= 0, got {workers!r}")
    if len(trainset) == 0:
        raise TuningError("the trainset is empty; give at least one example")


@contextlib.contextmanager
def _student(
    program: Any, workers: int, session: Session, timeout: float | None
) -> Iterator[tuple[Any, Pool | None]]:
    """The program the teleprompter gets: itself, or a copy dispatching to a worker pool."""
    if not workers:
        yield program, None
        return
    pool = Pool(workers, session, timeout)
    try:
        with dspy.context(trace=None):  # untraced calls are the ones that may run remotely
            yield dispatching(program, pool), pool
    finally:
        pool.close()


def _publish(compiled: Any) -> Published:
    with lost_lock_plainly():
        return publish(compiled)


class _Progress(BaseCallback):  # type: ignore[misc]
    """Publishes the run's progress on the lock: state, evaluations, last and best score."""

    def __init__(self, lock: Any, teleprompter: str) -> None:
        self.lock = lock
        self.teleprompter = teleprompter
        self.pool: Pool | None = None
        self.evaluations = 0
        self.score: float | None = None
        self.best: float | None = None
        self._lock = threading.Lock()

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: Exception | None = None
    ) -> None:
        """A ``dspy.Evaluate`` call ended: count it and publish its score."""
        score = getattr(outputs, "score", outputs)
        if exception is not None or not isinstance(score, int | float):
            return
        with self._lock:  # a teleprompter may run evaluations in parallel
            self.evaluations += 1
            self.score = float(score)
            self.best = self.score if self.best is None else max(self.best, self.score)
            self.report("compiling")

    def report(self, state: str, **more: Any) -> None:
        """Put the state and the counts on the lock."""
        self.lock.report(
            teleprompter=self.teleprompter, state=state, evaluations=self.evaluations,
            score=self.score, best=self.best,
            remote_calls=None if self.pool is None else self.pool.calls, **more,
        )  # fmt: skip
