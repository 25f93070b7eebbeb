"""The DSPy part of ``dspex demo`` does real work: workers, promotion, an Optuna study."""

from __future__ import annotations

import io

import optuna
import pytest
from rich.console import Console

from dspex.demo import STEPS, run_demo
from dspex.demo._tune import INSTRUCTION_CANDIDATES, N_TRIALS, TunedTrial

pytestmark = pytest.mark.timeout(180)


def test_the_demo_runs_the_program_in_workers_and_tunes_it_under_a_lock() -> None:
    out = io.StringIO()
    run = run_demo(Console(file=out, width=400, no_color=True), STEPS)
    text = out.getvalue()
    for expected in (
        "backend local: no server, no serialization",
        "the session is now backend session_store at unix://",
        "the workers' answers equal the in-process ones: True",
        "at temperature 0.20",  # a worker's very next call saw the new value
        "exit 1: dspex: error: variable 'temperature' is locked by optimizer 'optuna-demo'",
        "SimLM does not read meaning",  # the simulation is stated plainly
        "(restarted: False)",
        "optimization lock released: True",
    ):
        assert expected in text, f"missing {expected!r} in demo output:\n{text}"
    trials: list[TunedTrial] = run.notes["trials"]
    result = run.notes["tune_result"]
    assert len(trials) == N_TRIALS == len(result.study.trials)
    scores = [t.score for t in trials if t.state == "complete"]
    assert len(set(scores)) > 3  # the variables really move the metric
    assert result.best_score == max(t.value for t in result.study.trials if t.value is not None)
    assert {t.values["instructions"] for t in trials} <= set(INSTRUCTION_CANDIDATES)
    revisions = [t.revision for t in trials]
    assert revisions == sorted(revisions)  # one write per trial, in order
    states = {t.state for t in trials}
    assert states <= {"complete", "pruned"}
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in result.study.trials)
    kept = {n: r.value for n, r in result.kept.items()}
    assert kept == result.best_values == result.study.best_params
    assert run.notes["rolled_back"] == run.notes["start_values"]
    assert run.session.closed
