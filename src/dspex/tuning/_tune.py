"""Layer 3 (tuning): ``dspex.tune``, an Optuna study driving session variables under a lock.

One run: read the tuned variables and build the search space (nothing starts if it is wrong);
take the optimization lock; open the study; then Optuna's ``study.optimize`` runs the trials
(``n_jobs`` = ``concurrency``). Each trial asks Optuna for values, writes them to the session in
one atomic batch (so they are versioned, watched and visible), and scores the program with
exactly those records pinned (see :mod:`dspex.tuning._pinned`), in this process or in
``dspex.Remote`` workers. After every trial its number, score and the best so far are
published on the lock. At the end the starting values are restored in one batch and the best
values kept in another, which :meth:`TuneResult.rollback` undoes.
"""

from __future__ import annotations

import contextvars
import math
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dspex._model import VariableRecord
from dspex.errors import DspexError, TuningError
from dspex.session import Session, current_session
from dspex.state import UpdateResults
from dspex.tuning._evaluate import (
    Backend,
    Evaluator,
    InProcess,
    ProgramPool,
    Workers,
    score_trial,
)
from dspex.tuning._keep import keep, lost_lock_plainly
from dspex.tuning._result import TuneResult
from dspex.tuning._space import SpaceOverride, search_space, suggest
from dspex.tuning._study import (
    OPTIMIZER_ATTR,
    RUN_ATTR,
    check_direction,
    finished,
    open_study,
    prepare,
)

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["tune"]

StudyCallback = Callable[[Any, Any], None]


class _Lock(Protocol):
    """What a run needs of the handle ``session.optimizing`` returns."""

    def report(self, **progress: Any) -> None: ...


def tune(
    program: Callable[..., Any],
    devset: Sequence[Any],
    metric: Callable[..., Any],
    *,
    variables: Sequence[str],
    space: Mapping[str, SpaceOverride] | None = None,
    n_trials: int = 20,
    workers: Any = 0,
    concurrency: int = 1,
    study: optuna.study.Study | None = None,
    storage: Any = None,
    study_name: str | None = None,
    sampler: Any = None,
    pruner: Any = None,
    batch: int | None = None,
    baseline: bool = True,
    optimizer_id: str | None = None,
    policy: str = "fail",
    lock_timeout: float | None = None,
    worker_timeout: float | None = None,
    callbacks: Iterable[StudyCallback] = (),
    session: Session | None = None,
) -> TuneResult:
    """Tune session ``variables`` of ``program`` with an Optuna study; keep the best values.

    Args:
        program: called as ``program(**example_inputs)`` (a bound ``dspy.Module``, a
            ``dspex.Program`` or any callable that reads the session).
        devset: ``dspy.Example`` objects with inputs set, or mappings of keyword arguments.
        metric: ``metric(example, prediction)`` per example (bool or number); a trial scores
            the mean, which the study maximizes.
        variables: the session variables to tune.
        space: per variable, ``(low, high)``, a list of candidates or an Optuna distribution
            narrowing or replacing what the type and constraints give (see
            :func:`search_space`).
        n_trials: how many complete or pruned trials the study should hold at the end; a
            resumed study runs only the rest.
        workers: 0 evaluates in this process; N fans every trial out over a
            ``dspex.Remote`` pool of N processes (started here, closed at the end); a
            ``dspex.Remote`` of ``program`` evaluates on that pool, one trial at a time.
        concurrency: trials evaluated at once (Optuna's ``n_jobs``); each still sees only its
            own values.
        study: an Optuna study to drive (it must maximize); otherwise one is created or
            loaded from ``storage`` under ``study_name``.
        storage: None (memory), an Optuna RDB URL (``sqlite:///tune.db``), a journal file path,
            or an Optuna storage object.
        study_name: default ``"dspex-" + "-".join(sorted(variables))``.
        sampler, pruner: passed to ``optuna.create_study``.
        batch: examples between two pruning reports (default: the whole dev set without a
            pruner, else a tenth of it, rounded up to a multiple of ``workers``).
        baseline: enqueue the current values as the first trial of a new study.
        optimizer_id: the lock holder's id (default ``"optuna:" + study_name``; a resumed run
            must use the same one).
        policy, lock_timeout: what to do when another optimizer holds a variable
            (``"fail"``, ``"wait"`` up to ``lock_timeout`` seconds, ``"preempt"``).
        worker_timeout: seconds one worker call may run.
        callbacks: more Optuna callbacks ``callback(study, frozen_trial)``.
        session: default the current session.

    Returns:
        The study, the best values and score, and the records of the kept batch.

    Raises:
        TuningError: bad arguments or search space (nothing was started or written).
        LockedError: another optimizer holds a variable (or took it over mid-run).
        Exception: whatever the program or metric raised (the trial is marked failed).
            After any failure the starting values are put back before the lock is released.
    """
    session = session if session is not None else current_session()
    pool, count = _pool(workers, concurrency)
    _check_counts(devset, n_trials=n_trials, workers=count, concurrency=concurrency)
    if isinstance(variables, str):
        raise TuningError(
            f"variables must be a sequence of names, not the string {variables!r}; write "
            f"variables=({variables!r},)"
        )
    if not variables:
        raise TuningError("no variables to tune; name at least one in `variables`")
    distributions = search_space([session.variable(n) for n in variables], space)
    name = study_name or "dspex-" + "-".join(sorted(variables))
    optimizer = optimizer_id or f"optuna:{name}"
    study = study if study is not None else open_study(storage, name, sampler, pruner)
    check_direction(study)
    size = _batch(batch, len(devset), pool.workers if pool else count, study)
    run = _Run(session, study, distributions, secrets.token_hex(8), optimizer)
    with session.optimizing(
        *variables, optimizer_id=optimizer, policy=policy, timeout=lock_timeout
    ) as lock:
        before = {n: session.variable(n) for n in variables}  # read under the lock
        prepare(study, optimizer, _values(before) if baseline else None, distributions)
        evaluator = Evaluator(program, metric, devset)
        backend = _backend(evaluator, pool or count, session, worker_timeout)
        try:
            run.start(lock, backend, len(devset), size)
            _optimize(run, n_trials, concurrency, callbacks)
        except BaseException:
            run.restore(before)  # no trial's values are left live after a failed run
            raise
        finally:
            backend.close()
        return run.keep_best(before)


def _pool(workers: Any, concurrency: int) -> tuple[Any, int]:
    """(a caller's Remote or None, the worker count to start)."""
    if isinstance(workers, int):
        return None, workers
    if not (callable(getattr(workers, "map", None)) and hasattr(workers, "workers")):
        raise TuningError(
            f"workers must be a number of processes or a dspex.Remote, got {workers!r}"
        )
    if concurrency != 1:
        raise TuningError(
            "a dspex.Remote of the program reads the live session, so it evaluates one trial "
            "at a time; use concurrency=1, or workers=N for concurrent pinned trials"
        )
    return workers, 0


def _values(records: Mapping[str, VariableRecord]) -> dict[str, Any]:
    return {name: record.value for name, record in records.items()}


def _optimize(
    run: _Run, n_trials: int, concurrency: int, callbacks: Iterable[StudyCallback]
) -> None:
    """Run the trials the study still lacks (a resumed study holds some already)."""
    left = n_trials - finished(run.study)
    if left > 0:
        run.study.optimize(
            run.objective, n_trials=left, n_jobs=concurrency,
            callbacks=[run.publish, *callbacks],
        )  # fmt: skip


def _check_counts(devset: Sequence[Any], **counts: int) -> None:
    if len(devset) == 0:
        raise TuningError("the dev set is empty; give at least one example")
    minimum = {"n_trials": 1, "workers": 0, "concurrency": 1}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum[key]:
            raise TuningError(f"{key} must be an integer >= {minimum[key]}, got {value!r}")


def _backend(
    evaluator: Evaluator, workers: Any, session: Session, timeout: float | None
) -> Backend:
    if not isinstance(workers, int):
        return ProgramPool(workers, evaluator)
    return Workers(evaluator, workers, session, timeout) if workers else InProcess(evaluator)


def _batch(batch: int | None, examples: int, workers: int, study: optuna.study.Study) -> int:
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise TuningError(f"batch must be an integer >= 1, got {batch!r}")
        return batch
    from optuna.pruners import NopPruner

    if isinstance(study.pruner, NopPruner):
        return examples
    step = max(1, workers)
    return min(examples, step * math.ceil(math.ceil(examples / 10) / step))


class _Run:
    """One ``tune`` call's state: what each trial writes, evaluates and publishes."""

    def __init__(
        self,
        session: Session,
        study: optuna.study.Study,
        space: Mapping[str, BaseDistribution],
        run_id: str,
        optimizer_id: str,
    ) -> None:
        self.session = session
        self.study = study
        self.space = space
        self.run_id = run_id
        self.optimizer_id = optimizer_id
        # The caller's context holds the session and the lock ownership; Optuna's n_jobs
        # threads start with an empty one, so every trial runs in a copy of it.
        self.context = contextvars.copy_context()
        self.lock: _Lock | None = None
        self.backend: Backend | None = None
        self.examples = 0
        self.batch = 1

    def start(self, lock: _Lock, backend: Backend, examples: int, batch: int) -> None:
        """Set what the trials need once the lock is held and the backend is up."""
        self.lock, self.backend, self.examples, self.batch = lock, backend, examples, batch
        self.context = contextvars.copy_context()

    def objective(self, trial: optuna.trial.Trial) -> float:
        """Optuna's objective: write this trial's values, score them pinned."""
        return self.context.copy().run(self._trial, trial)

    def _trial(self, trial: optuna.trial.Trial) -> float:
        assert self.backend is not None and self.lock is not None
        trial.set_user_attr(OPTIMIZER_ATTR, self.optimizer_id)
        trial.set_user_attr(RUN_ATTR, self.run_id)
        values = {name: suggest(trial, name, d) for name, d in self.space.items()}
        # Renewing first proves the lock is still ours: once it is lost (preempted, expired)
        # a write to the then unlocked variable would succeed and clobber the new holder's.
        self.lock.report(trial=trial.number, state="running", score=None)
        records = _records(self._write(values))
        trial.set_user_attr("dspex_revision", max(r.revision for r in records.values()))
        return score_trial(trial, self.backend, records, self.examples, self.batch)

    def _write(self, values: Mapping[str, Any]) -> UpdateResults:
        with lost_lock_plainly():
            return self.session.update(values, atomic=True)

    def publish(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback: put the trial, its score and the best so far on the lock."""
        assert self.lock is not None
        best = _best(study)
        self.lock.report(
            trial=trial.number, state=trial.state.name.lower(), score=trial.value,
            best=None if best is None else best.value,
            best_trial=None if best is None else best.number,
            best_values=None if best is None else dict(best.params),
            finished=finished(study),
        )  # fmt: skip

    def restore(self, before: Mapping[str, VariableRecord]) -> None:
        """Put the starting values back after a failed run, if the lock is still ours."""
        try:
            if self.lock is not None:
                self.lock.report(state="failed")  # raises once the lock is lost
            self.context.run(keep, self.session, before, {})
        except DspexError:
            pass  # lost: the values belong to whoever holds the lock now

    def keep_best(self, before: Mapping[str, VariableRecord]) -> TuneResult:
        """Restore the starting values, then keep the best ones: two atomic batches."""
        best = _best(self.study)
        values = {} if best is None else {n: best.params[n] for n in self.space}
        kept = self.context.run(keep, self.session, before, values)
        return TuneResult(
            self.study, values, None if best is None else best.value, kept=kept,
            before=dict(before), optimizer_id=self.optimizer_id,
        )  # fmt: skip


def _records(results: UpdateResults) -> dict[str, VariableRecord]:
    return {n: r for n, r in results.items() if isinstance(r, VariableRecord)}


def _best(study: optuna.study.Study) -> optuna.trial.FrozenTrial | None:
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial
