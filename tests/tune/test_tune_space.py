"""dspex.tune edge cases: overridden spaces, failed runs, resumed-complete studies, directions."""

from __future__ import annotations

import optuna
import pytest
import tune_targets as targets

import dspex
from dspex.errors import TuningError

pytestmark = pytest.mark.timeout(120)


def test_spaces_narrow_and_replace_per_variable(session: dspex.Session) -> None:
    session.register("verbose", bool, False)
    session.register("prompt", str, "a", metadata={"candidates": ["a", "b", "c"]})
    result = dspex.tune(
        targets.ReadValues(), targets.devset(1), targets.peak,
        variables=("temperature", "top_k", "verbose", "prompt"), n_trials=15,
        space={
            "temperature": optuna.distributions.FloatDistribution(0.01, 1.0, log=True),
            "top_k": (3, 4),
        },
        sampler=optuna.samplers.RandomSampler(seed=4),
    )  # fmt: skip
    params = [t.params for t in result.study.trials]
    assert all(0.01 <= p["temperature"] <= 1.0 for p in params)
    assert {p["top_k"] for p in params} <= {3, 4}
    assert {p["verbose"] for p in params} <= {False, True}
    assert {p["prompt"] for p in params} == {"a", "b", "c"}
    distributions = result.study.trials[-1].distributions
    assert distributions["temperature"].log is True


def test_a_failing_metric_stops_the_run_and_puts_the_starting_values_back(
    session: dspex.Session,
) -> None:
    start = session.get("temperature")
    with pytest.raises(RuntimeError, match="metric broke"):
        dspex.tune(
            targets.ReadValues(), targets.devset(2), targets.FailsAt(7), n_trials=10,
            variables=("temperature",), sampler=optuna.samplers.RandomSampler(seed=1),
        )  # fmt: skip
    assert session.get("temperature") == start
    assert session.variable("temperature").lock is None
    history = [r.value for r in session.history("temperature")]
    assert len(history) > 3 and history[-1] == start  # trials were written, then restored


def test_a_study_that_already_holds_n_trials_runs_none_and_keeps_its_best(
    session: dspex.Session,
) -> None:
    study = optuna.create_study(direction="maximize")
    first = dspex.tune(
        targets.ReadValues(), targets.devset(1), targets.peak, variables=("temperature",),
        n_trials=6, study=study,
    )  # fmt: skip
    first.rollback(session)
    again = dspex.tune(
        targets.ReadValues(), targets.devset(1), targets.peak, variables=("temperature",),
        n_trials=6, study=study,
    )  # fmt: skip
    assert len(again.study.trials) == 6
    assert session.get("temperature") == study.best_params["temperature"]


def test_a_minimizing_study_or_no_variables_is_refused(session: dspex.Session) -> None:
    with pytest.raises(TuningError, match="direction='maximize'"):
        dspex.tune(
            targets.ReadValues(), targets.devset(1), targets.peak, variables=("temperature",),
            study=optuna.create_study(direction="minimize"),
        )  # fmt: skip
    with pytest.raises(TuningError, match="no variables"):
        dspex.tune(targets.ReadValues(), targets.devset(1), targets.peak, variables=())
    with pytest.raises(TuningError, match="dev set is empty"):
        dspex.tune(targets.ReadValues(), [], targets.peak, variables=("temperature",))
    for bad in ({"workers": "2"}, {"workers": -1}, {"batch": 0}, {"concurrency": 0}):
        with pytest.raises(TuningError):
            dspex.tune(
                targets.ReadValues(), targets.devset(1), targets.peak,
                variables=("temperature",), **bad,  # type: ignore[arg-type]
            )  # fmt: skip
    assert session.variable("temperature").version == 1  # nothing was ever written
