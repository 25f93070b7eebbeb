"""dspex.tune fanned out over dspex.Remote workers: concurrent trials keep their own values."""

from __future__ import annotations

import itertools

import optuna
import pytest
import tune_targets as targets

import dspex

pytestmark = pytest.mark.timeout(180)


def test_concurrent_trials_on_two_workers_each_see_only_their_own_values(
    session: dspex.Session,
) -> None:
    with session.watch("temperature") as updates:
        result = dspex.tune(
            targets.ReadValues(delay=0.05), targets.devset(4), targets.seen_elsewhere,
            variables=("temperature",), n_trials=6, workers=2, concurrency=2,
            sampler=optuna.samplers.RandomSampler(seed=11),
        )  # fmt: skip
        writes = []
        while (update := updates.poll(timeout=0.5)) is not None:
            if update.kind == "set":
                writes.append(update.record.value)
    trials = result.study.trials
    assert len(trials) == 6
    for trial in trials:  # every example ran in a worker and saw the trial's own value
        assert trial.value == pytest.approx(trial.params["temperature"])
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), "no trials overlapped"
    for trial in trials:  # and each trial's values were written to the session
        assert trial.params["temperature"] in writes
    assert session.get("temperature") == result.best_values["temperature"]


def test_a_remote_of_the_program_evaluates_one_trial_at_a_time_with_its_values(
    session: dspex.Session,
) -> None:
    with dspex.Remote(targets.ReadValues(), workers=2) as pool:
        result = dspex.tune(
            targets.ReadValues(), targets.devset(4), targets.seen_elsewhere,
            variables=("temperature",), n_trials=5, workers=pool,
            sampler=optuna.samplers.RandomSampler(seed=2),
        )  # fmt: skip
        for trial in result.study.trials:  # run by the pool's workers, with the trial's value
            assert trial.value == pytest.approx(trial.params["temperature"])
        with pytest.raises(dspex.errors.TuningError, match="one trial at a time"):
            dspex.tune(
                targets.ReadValues(), targets.devset(4), targets.seen_elsewhere,
                variables=("temperature",), n_trials=2, workers=pool, concurrency=2,
            )  # fmt: skip


def test_a_bound_dspy_program_in_workers_is_called_with_each_trial_s_temperature(
    session: dspex.Session,
) -> None:
    from dspex.demo._program import DemoQA
    from dspex.sim import load_devset

    result = dspex.tune(
        DemoQA(), load_devset()[:4], targets.reasoning_temperature,
        variables=("temperature",), n_trials=4, workers=2, concurrency=2,
        sampler=optuna.samplers.RandomSampler(seed=8),
    )  # fmt: skip
    for trial in result.study.trials:  # what the LM call really received, in the workers
        assert trial.value == pytest.approx(round(trial.params["temperature"], 2))
