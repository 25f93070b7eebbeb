"""``dspex bench --json tune`` as a real subprocess: every figure present, beside its baseline."""

from __future__ import annotations

import json

import pytest
from support.serve_process import run_dspex

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def test_bench_tune_prints_overhead_and_throughput_beside_plain_optuna() -> None:
    completed = run_dspex("bench", "--json", "tune", timeout=200)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["suites"] == ["tune"]
    for pair in (
        ("tune_trial_ms_dspex", "tune_trial_ms_plain_optuna"),
        ("tune_noop_trial_ms_dspex", "tune_noop_trial_ms_plain_optuna"),
        ("tune_trials_per_s_1_worker", "tune_trials_per_s_plain_optuna_1_job"),
        ("tune_trials_per_s_2_workers", "tune_trials_per_s_plain_optuna_2_jobs"),
    ):
        assert all(result[name] > 0 for name in pair), pair
    overhead = result["tune_noop_trial_ms_dspex"] - result["tune_noop_trial_ms_plain_optuna"]
    assert result["tune_overhead_ms_per_trial"] == pytest.approx(overhead, abs=0.002)
    assert result["tune_overhead_pct_of_50ms_trial"] == pytest.approx(overhead * 2, abs=0.01)
    assert result["tune_trial_ms_plain_optuna"] > 30  # the trial really does ~50 ms of work
    assert isinstance(result["targets"]["tune_overhead_pct_of_50ms_trial"]["met"], bool)
