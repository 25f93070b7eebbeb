"""The DSPy part of ``dspex demo`` does real work: workers, promotion, a locked grid search."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from dspex.demo import STEPS, run_demo
from dspex.demo._optimize import Trial

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
        "exit 1: dspex: error: variable 'temperature' is locked by optimizer 'grid-search'",
        "progress published on the lock: {'iteration': 12",
        "(restarted: False)",
        "grid search: variable history and dev-set scores",
        "optimization lock released: True",
    ):
        assert expected in text, f"missing {expected!r} in demo output:\n{text}"
    trials: list[Trial] = run.notes["trials"]
    assert len(trials) == 13
    assert len({t.score for t in trials}) > 3  # the variables really move the metric
    assert max(t.score for t in trials) > trials[0].score
    assert [t.revision for t in trials] == sorted(t.revision for t in trials)
    assert run.session.closed
