"""dspex.tune in process: space from constraints, trials under the lock, kept best, rollback."""

from __future__ import annotations

import itertools

import optuna
import pytest
import tune_targets as targets

import dspex
from dspex.errors import LockedError, TuningError

pytestmark = pytest.mark.timeout(120)


def test_tune_keeps_the_best_values_in_one_batch_that_rollback_undoes(
    session: dspex.Session,
) -> None:
    start = {n: session.get(n) for n in ("temperature", "top_k", "style")}
    with session.watch("temperature") as updates:
        result = dspex.tune(
            targets.ReadValues(), targets.devset(3), targets.peak,
            variables=("temperature", "top_k", "style"), n_trials=25,
            sampler=optuna.samplers.TPESampler(seed=1),
        )  # fmt: skip
        seen = []
        while (update := updates.poll(timeout=0.5)) is not None:
            seen.append(update)
    study = result.study
    assert len(study.trials) == 25
    assert study.trials[0].params == start  # the baseline: the starting values
    assert result.best_values == study.best_params
    assert result.best_score == pytest.approx(study.best_value)
    assert {n: session.get(n) for n in start} == result.best_values
    revisions = sorted(record.revision for record in result.kept.values())
    assert revisions == list(range(revisions[0], revisions[0] + 3))  # one atomic batch
    trial_writes = [u for u in seen if u.kind == "set"]
    assert len(trial_writes) >= 25  # each trial wrote its values to the session
    progress = [u.record.lock["progress"] for u in seen if u.kind == "lock" and u.record.lock]
    assert progress, "no progress was published on the lock"
    last = progress[-1]
    assert last["trial"] == 24 and last["best"] == pytest.approx(study.best_value)
    assert last["best_values"] == study.best_params
    assert session.variable("temperature").lock is None  # released
    result.rollback(session)
    assert {n: session.get(n) for n in start} == start


def test_every_trial_is_scored_with_its_own_values_when_trials_run_concurrently(
    session: dspex.Session,
) -> None:
    result = dspex.tune(
        targets.ReadValues(delay=0.01), targets.devset(4), targets.seen_temperature,
        variables=("temperature",), n_trials=8, concurrency=3,
        sampler=optuna.samplers.RandomSampler(seed=3),
    )  # fmt: skip
    trials = result.study.trials
    for trial in trials:
        assert trial.value == pytest.approx(trial.params["temperature"])
    assert _overlapping(trials)


def _overlapping(trials: list[optuna.trial.FrozenTrial]) -> bool:
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def test_pruning_stops_poor_trials_early_on_a_per_example_metric(
    session: dspex.Session,
) -> None:
    result = dspex.tune(
        targets.ReadValues(), targets.devset(10), targets.cool_enough,
        variables=("temperature",), n_trials=12, batch=2,
        sampler=optuna.samplers.RandomSampler(seed=5),
        pruner=optuna.pruners.ThresholdPruner(lower=0.5),
    )  # fmt: skip
    states = {t.number: t.state for t in result.study.trials}
    pruned = [t for t in result.study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete, states
    for trial in pruned:
        assert trial.params["temperature"] >= 0.5
        assert max(trial.intermediate_values) == 2  # stopped after the first batch
    for trial in complete:
        assert max(trial.intermediate_values) == 10


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"temperature": (0.0, 3.0)}, "includes 3.0, which the variable refuses"),
        ({"style": ["terse", "loud"]}, "includes 'loud'"),
        ({"top_k": "many"}, "not understood"),
        ({"nope": [1]}, "not tuned"),
    ],
)
def test_a_bad_search_space_is_refused_before_anything_runs(
    session: dspex.Session, space: dict[str, object], message: str
) -> None:
    before = session.variable("temperature")
    with pytest.raises(TuningError, match=message):
        dspex.tune(
            targets.ReadValues(), targets.devset(2), targets.peak,
            variables=("temperature", "top_k", "style"), space=space, n_trials=3,
        )  # fmt: skip
    assert session.variable("temperature") == before  # nothing written, no lock taken


def test_a_free_string_needs_candidates_and_the_error_says_how(session: dspex.Session) -> None:
    session.register("instructions", str, "Answer.")
    with pytest.raises(TuningError, match=r"space=\{'instructions': \[\.\.\.\]\}"):
        dspex.tune(
            targets.ReadValues(), targets.devset(1), targets.peak,
            variables=("instructions",), n_trials=1,
        )  # fmt: skip


def test_a_held_variable_fails_fast_with_the_default_policy(session: dspex.Session) -> None:
    with (
        session.optimizing("temperature", optimizer_id="someone-else"),
        pytest.raises(LockedError, match="someone-else"),
    ):
        dspex.tune(
            targets.ReadValues(), targets.devset(1), targets.peak,
            variables=("temperature",), n_trials=1,
        )  # fmt: skip
