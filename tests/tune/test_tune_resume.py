"""A tuning run killed with SIGKILL resumes its Optuna study where it stopped (journal, RDB).

A kill in the middle of a journal write leaves Optuna's journal lock file behind; the resumed
run then waits out Optuna's 30 s grace period before it takes the lock, which is why the
journal case is slower."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from support.serve_process import ServeProcess
from tuner import Tuner

import dspex

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

N_TRIALS = 10


def _states(storage: str | optuna.storages.BaseStorage) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="study-temperature", storage=storage).trials


def _journal(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


@pytest.mark.parametrize("kind", ["journal", "rdb"])
def test_a_killed_run_resumes_its_study_and_retries_the_trial_it_was_running(
    store: ServeProcess, store_session: dspex.Session, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / ("tune.log" if kind == "journal" else "tune.db")
    storage = str(path) if kind == "journal" else f"sqlite:///{path}"
    options = ("--n-trials", str(N_TRIALS), "--delay", "0.1", "--storage", storage)
    first = Tuner(store.address, store_session.session_id, "temperature", *options)
    first.wait_for("trial ", count=3)
    reader = _journal(path) if kind == "journal" else storage
    deadline = time.monotonic() + 30
    # Kill while a trial runs with its values chosen, so there is something to retry: the run
    # is paused (SIGSTOP) while its study is read, so the trial seen running is still running
    # when SIGKILL lands.
    while True:
        assert time.monotonic() < deadline, "the run never had a trial running"
        first.process.send_signal(signal.SIGSTOP)
        try:
            states = _states(reader)
        except sqlalchemy.exc.OperationalError:  # paused while it held the SQLite write lock
            states = []
        if any(t.state == optuna.trial.TrialState.RUNNING and t.params for t in states):
            break
        first.process.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    first.kill()
    before = _states(reader)
    done = [t for t in before if t.state.is_finished()]
    running = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]
    assert len(done) >= 3 and len(running) == 1
    # The killed run's store connection is gone, so its lock is released at once.
    deadline = time.monotonic() + 10
    while store_session.variable("temperature").lock is not None:
        assert time.monotonic() < deadline, "the killed run's lock was never released"
        time.sleep(0.05)

    second = Tuner(store.address, store_session.session_id, "temperature", *options)
    code, outcome = second.finish()
    assert code == 0 and outcome is not None, second.stderr()
    after = _states(reader)
    finished = [t for t in after if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(finished) == N_TRIALS  # the resumed run ran only the rest
    assert len([line for line in second.lines if line.startswith("trial ")]) == (
        N_TRIALS - len(done)
    )
    assert [t.number for t in after[: len(before)]] == [t.number for t in before]
    lost = after[running[0].number]
    assert lost.state == optuna.trial.TrialState.FAIL
    retried = [t for t in after if t.user_attrs.get("dspex_retry_of") == lost.number]
    assert len(retried) == 1 and retried[0].params == running[0].params
    study = optuna.load_study(study_name="study-temperature", storage=reader)
    assert outcome["best_values"] == study.best_params
    assert store_session.get("temperature") == study.best_params["temperature"]
