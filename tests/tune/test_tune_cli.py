"""``dspex vars lock|unlock|progress`` against a real store, with real tuning processes."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from support.serve_process import DSPEX, ServeProcess, run_dspex
from tuner import Tuner

import dspex

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def _vars(store: ServeProcess, session: dspex.Session, *args: str) -> list[str]:
    where = ["--store", store.address, "--session", session.session_id]
    return ["vars", *args, *where, "--timeout", "60"]  # generous per call: shared machine


def test_lock_holds_until_unlock_and_progress_shows_the_holder(
    store: ServeProcess, store_session: dspex.Session
) -> None:
    command = _vars(store, store_session, "lock", "temperature", "top_k")
    holder = subprocess.Popen(
        [DSPEX, *command, "--optimizer-id", "ops", "--hold", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        first = holder.stdout.readline()
        assert first.startswith("temperature: locked by 'ops'"), first + holder.stderr.read()
        refused = run_dspex(*_vars(store, store_session, "set", "temperature", "1.0"))
        assert refused.returncode == 1 and "locked by optimizer 'ops'" in refused.stderr
        shown = run_dspex(*_vars(store, store_session, "progress", "--json"))
        locks = {
            r["name"]: r["lock"]["optimizer_id"]
            for r in map(json.loads, shown.stdout.split("\n")[:-1])
        }
        assert locks == {"temperature": "ops", "top_k": "ops"}
        waited = run_dspex(
            *_vars(store, store_session, "lock", "temperature"),
            "--policy", "wait", "--lock-timeout", "0.5",
        )  # fmt: skip
        assert waited.returncode == 1 and "'ops'" in waited.stderr
        freed = run_dspex(*_vars(store, store_session, "unlock", "temperature"))
        assert freed.stdout.strip() == "temperature: released the lock of 'ops'", freed.stderr
        assert store_session.variable("temperature").lock is None
        assert store_session.variable("top_k").lock["optimizer_id"] == "ops"
        assert run_dspex(*_vars(store, store_session, "set", "temperature", "1.0")).returncode == 0
        holder.terminate()  # SIGTERM: leaves through the `with`, releasing top_k
        assert holder.wait(60) == 0
        assert "released temperature, top_k" in holder.stdout.read()
        assert store_session.variable("top_k").lock is None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)


def test_progress_follow_prints_a_tuning_run_as_it_goes(
    store: ServeProcess, store_session: dspex.Session
) -> None:
    tuner = Tuner(
        store.address, store_session.session_id, "temperature",
        "--optimizer-id", "study-A", "--n-trials", "200", "--delay", "0.05",
    )  # fmt: skip
    try:
        tuner.wait_for("trial ", count=1)
        followed = run_dspex(
            *_vars(store, store_session, "progress", "temperature", "--follow", "--json"),
            "--count", "4", "--timeout-after", "30",
        )  # fmt: skip
        assert followed.returncode == 0, followed.stderr
        lines = [json.loads(line) for line in followed.stdout.splitlines()]
        assert len(lines) == 4
        progress = [line["lock"]["progress"] for line in lines]
        assert all(line["lock"]["optimizer_id"] == "study-A" for line in lines)
        trials = [p["trial"] for p in progress]
        assert trials == sorted(trials) and trials[-1] > trials[0]
        assert all({"trial", "score", "best", "best_values"} <= set(p) for p in progress)
        plain = run_dspex(*_vars(store, store_session, "progress"))
        assert plain.stdout.startswith("temperature: locked by 'study-A', lease ")
        assert '"best":' in plain.stdout
    finally:
        tuner.kill()
    deadline = time.monotonic() + 10
    while store_session.variable("temperature").lock is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
