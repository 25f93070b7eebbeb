"""Two tuning processes on disjoint variables of one store session, and a third's lock policy.

Every optimizer is a real process joined to a real ``dspex serve`` store; each holds its own
lock and publishes its own progress. A third optimizer asking for a held variable gets what it
chose: ``fail`` at once, ``wait`` until the holder is done, ``preempt`` to take it over (the
holder's next write is refused and its run ends with a LockedError).
"""

from __future__ import annotations

import pytest
from support.serve_process import ServeProcess
from tuner import Tuner

import dspex

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def _progress(session: dspex.Session, name: str) -> tuple[str, dict[str, object]]:
    lock = session.variable(name).lock
    assert lock is not None, f"{name} is not locked"
    return lock["optimizer_id"], dict(lock.get("progress") or {})


def _trial_times(tuner: Tuner) -> list[float]:
    return [float(line.split()[-1]) for line in tuner.lines if line.startswith("trial ")]


def test_two_optimizers_run_at_once_and_a_third_gets_its_policy(
    store: ServeProcess, store_session: dspex.Session
) -> None:
    where = (store.address, store_session.session_id)
    slow = ("--delay", "0.05")
    a = Tuner(*where, "temperature", "--optimizer-id", "A", "--n-trials", "400", *slow)
    b = Tuner(*where, "top_k", "--optimizer-id", "B", "--n-trials", "40", *slow)
    try:
        a.wait_for("trial ", count=2)
        b.wait_for("trial ", count=2)
        holder_a, progress_a = _progress(store_session, "temperature")
        holder_b, progress_b = _progress(store_session, "top_k")
        assert (holder_a, holder_b) == ("A", "B")
        assert {"trial", "score", "best"} <= set(progress_a) & set(progress_b)

        failing = Tuner(*where, "temperature", "--optimizer-id", "C", "--policy", "fail")
        code, _ = failing.finish()
        assert code == 3
        assert any("locked by optimizer 'A'" in line for line in failing.lines), failing.lines

        waiting = Tuner(
            *where, "top_k", "--optimizer-id", "W", "--policy", "wait",
            "--lock-timeout", "120", "--n-trials", "3",
        )  # fmt: skip
        code, b_outcome = b.finish()
        assert code == 0 and b_outcome is not None, b.stderr()
        code, w_outcome = waiting.finish()
        assert code == 0 and w_outcome is not None, waiting.stderr()
        assert min(_trial_times(waiting)) > max(_trial_times(b))  # it waited for B
        assert store_session.get("top_k") == w_outcome["best_values"]["top_k"]

        taking = Tuner(
            *where, "temperature", "--optimizer-id", "P", "--policy", "preempt",
            "--n-trials", "3",
        )  # fmt: skip
        code, p_outcome = taking.finish()
        assert code == 0 and p_outcome is not None, taking.stderr()
        code, _ = a.finish()
        assert code == 3, a.stderr()
        said = [line for line in a.lines if line.startswith("locked:")]
        # Refused while P holds it, or (if P was already done) told its lock is gone.
        assert said and ("optimizer 'P'" in said[0] or "not locked" in said[0]), said
        assert store_session.get("temperature") == p_outcome["best_values"]["temperature"]
        assert store_session.variable("temperature").lock is None
    finally:
        for tuner in (a, b):
            if tuner.process.poll() is None:
                tuner.kill()
