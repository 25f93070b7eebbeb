"""Layer 3 (tuning): the Optuna study a tuning run drives, in Optuna's own storage.

A study given by the caller is used as is. Otherwise one is created (or loaded, when it already
exists) with ``direction="maximize"``: in memory, in an Optuna RDB storage (``sqlite:///...``,
``postgresql://...``) or in a journal file (any other string is a file path), so a run that is
killed resumes where it stopped. When a run starts (holding the optimizer's lock, so no other
run of it is live), trials still RUNNING from an earlier run of the same optimizer, or killed
before they were marked with one, are failed and their parameters enqueued again (the pattern of
Optuna's ``RetryFailedTrialCallback``). So a study is driven by one dspex run at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dspex.errors import TuningError
from dspex.tuning._space import fits

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["OPTIMIZER_ATTR", "RUN_ATTR", "check_direction", "finished", "open_study", "prepare"]

OPTIMIZER_ATTR = "dspex_optimizer"
"""Trial user attribute: the optimizer id of the run that evaluated the trial."""
RUN_ATTR = "dspex_run"
"""Trial user attribute: the id of that run (one per ``tune`` call)."""


def import_optuna() -> Any:
    """Optuna, or a clear error saying how to install it."""
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is in the tune extra
        raise TuningError(
            "dspex.tune needs Optuna; install it with `pip install 'dspex[tune]'`"
        ) from exc
    return optuna


def open_study(storage: Any, study_name: str, sampler: Any, pruner: Any) -> optuna.study.Study:
    """Create or load ``study_name`` in ``storage`` (None: in memory)."""
    lib = import_optuna()
    if isinstance(storage, str) and "://" not in storage:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(storage))
    study: optuna.study.Study = lib.create_study(
        storage=storage, study_name=study_name, sampler=sampler, pruner=pruner,
        direction="maximize", load_if_exists=True,
    )  # fmt: skip
    return study


def check_direction(study: optuna.study.Study) -> None:
    """Refuse a study that does not maximize one objective (the mean metric)."""
    from optuna.study import StudyDirection

    if len(study.directions) != 1 or study.direction != StudyDirection.MAXIMIZE:
        raise TuningError(
            f"study {study.study_name!r} has directions {[d.name for d in study.directions]}; "
            "dspex.tune maximizes one value, the mean metric: create it with "
            "direction='maximize'"
        )


def finished(study: optuna.study.Study) -> int:
    """How many trials of ``study`` are complete or pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def prepare(
    study: optuna.study.Study,
    optimizer_id: str,
    baseline: Mapping[str, Any] | None,
    space: Mapping[str, BaseDistribution],
) -> None:
    """Retry trials an earlier run left RUNNING; enqueue ``baseline`` in a new study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state == TrialState.RUNNING and _left_behind(trial.user_attrs, optimizer_id):
            study.tell(trial.number, state=TrialState.FAIL)
            if trial.params:
                study.enqueue_trial(
                    dict(trial.params), user_attrs={"dspex_retry_of": trial.number}
                )
    if not trials and baseline is not None:
        params = {n: v for n, v in baseline.items() if fits(space[n], v)}
        study.enqueue_trial(params, user_attrs={"dspex_baseline": True})


def _left_behind(attrs: Mapping[str, Any], optimizer_id: str) -> bool:
    """A RUNNING trial of this optimizer, or one killed before it was marked (no attrs)."""
    return bool(attrs.get(OPTIMIZER_ATTR, optimizer_id) == optimizer_id)
