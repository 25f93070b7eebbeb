"""Session verbs for dependencies and optimization locks (local sessions)."""

from __future__ import annotations

import threading
import time

import pytest

import dspex
from dspex import errors


def _wait_for(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_optimizing_grants_exclusive_write_and_releases() -> None:
    with dspex.Session() as session:
        session.register("temperature", float, 0.7, min=0.0, max=2.0)
        outside: list[BaseException] = []
        with session.optimizing("temperature", optimizer_id="grid") as lock:
            session.set("temperature", 0.3)
            lock.report(iteration=1, best_score=0.8, best_value=0.3)
            record = session.variable("temperature")
            assert record.lock is not None and record.lock["progress"]["best_score"] == 0.8

            def other_writer() -> None:  # a fresh thread: not the holder's context
                try:
                    session.set("temperature", 1.5)
                except errors.LockedError as exc:
                    outside.append(exc)

            thread = threading.Thread(target=other_writer)
            thread.start()
            thread.join()
        assert len(outside) == 1 and "grid" in str(outside[0])
        assert session.get("temperature") == 0.3
        assert session.variable("temperature").lock is None
        session.set("temperature", 1.0)  # released: anyone may write


def test_optimizing_fails_whole_when_one_lock_is_taken() -> None:
    with dspex.Session() as session:
        session.register("a", float, 0.1)
        session.register("b", float, 0.2)
        with session.optimizing("b", optimizer_id="first"):
            second = session.optimizing("a", "b", optimizer_id="second")
            with pytest.raises(errors.LockedError, match="first"), second:
                pass
            assert session.variable("a").lock is None  # the lock taken on "a" was given back


def test_optimizing_renews_its_lease() -> None:
    with dspex.Session() as session:
        session.register("a", float, 0.1)
        with session.optimizing("a", optimizer_id="slow", lease=0.3):
            time.sleep(0.8)  # longer than the lease: the renewer keeps it alive
            session.set("a", 0.5)
            assert session.variable("a").lock is not None


def test_depend_recompute_runs_in_topological_order() -> None:
    with dspex.Session() as session:
        session.register("base", float, 1.0)
        session.register("double", float, 2.0)
        session.register("total", float, 3.0)
        calls: list[str] = []

        def double(values: dict[str, float]) -> float:
            calls.append("double")
            return values["base"] * 2

        def total(values: dict[str, float]) -> float:
            calls.append("total")
            return values["base"] + values["double"]

        session.depend("base", "double", recompute=double)
        session.depend("double", "total", recompute=total)
        session.depend("base", "total", recompute=total)
        assert session.dependents("base") == ["double", "total"]
        session.set("base", 5.0)
        _wait_for(lambda: session.get("total") == 15.0 and not session.variable("total").stale)
        assert session.get("double") == 10.0
        assert calls[:2] == ["double", "total"]
        with pytest.raises(errors.CycleError):
            session.depend("total", "base")
