"""The shared contract for dependencies, optimization locks, session expiry and limits.

Like ``StateProviderContract`` it uses only StateProvider methods, so every provider kind (the
in-process provider and the real store server) runs it unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from dspex import errors
from dspex._model import VariableUpdate, make_spec
from dspex.state import StateProvider, VariableWatch, current_lock_owner

WAIT = 5.0
FLOAT = make_spec(float, min=0.0, max=2.0)
MakeProvider = Callable[..., AbstractContextManager[StateProvider]]


def _until(watch: VariableWatch, kind: str) -> VariableUpdate:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        update = watch.poll(timeout=0.2)
        if update is not None and update.kind == kind:
            return update
    raise AssertionError(f"no {kind!r} update within {WAIT}s")


def _eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


class HardeningContract:
    """Dependencies, locks, expiry and limits: the same behaviour on every provider kind."""

    @pytest.fixture(name="sid")
    def _sid(self, provider: StateProvider) -> str:
        session_id = provider.create_session()
        for name, value in (("a", 0.1), ("b", 0.2), ("c", 0.3), ("d", 0.4)):
            provider.register_variable(session_id, name, FLOAT, value)
        return session_id

    # -- dependencies ----------------------------------------------------------------------

    def test_add_dependency_orders_dependents_topologically(
        self, provider: StateProvider, sid: str
    ) -> None:
        for up, down in (("a", "b"), ("b", "c"), ("a", "d"), ("d", "c")):
            provider.add_dependency(sid, up, down)
        assert provider.get_dependents(sid, "a") == ["b", "d", "c"]
        assert provider.get_dependents(sid, "c") == []
        assert provider.get_dependencies(sid) == [("a", "b"), ("a", "d"), ("b", "c"), ("d", "c")]

    def test_add_dependency_refuses_cycle_naming_it(
        self, provider: StateProvider, sid: str
    ) -> None:
        provider.add_dependency(sid, "a", "b")
        provider.add_dependency(sid, "b", "c")
        with pytest.raises(errors.CycleError, match="c -> a -> b -> c"):
            provider.add_dependency(sid, "c", "a")
        with pytest.raises(errors.CycleError):
            provider.add_dependency(sid, "a", "a")
        assert provider.get_dependencies(sid) == [("a", "b"), ("b", "c")]

    def test_add_dependency_unknown_variable(self, provider: StateProvider, sid: str) -> None:
        with pytest.raises(errors.VariableNotFoundError):
            provider.add_dependency(sid, "a", "zz")
        assert provider.get_dependencies(sid) == []

    def test_upstream_change_marks_dependents_stale(
        self, provider: StateProvider, sid: str
    ) -> None:
        provider.add_dependency(sid, "a", "b")
        provider.add_dependency(sid, "b", "c")
        with provider.watch_variables(sid) as watch:
            provider.set_variable(sid, "a", 1.0)
            stale = [_until(watch, "stale"), _until(watch, "stale")]
        assert [u.name for u in stale] == ["b", "c"]
        record = provider.get_variable(sid, "c")
        assert record.stale and record.version == 1 and record.value == 0.3
        assert not provider.get_variable(sid, "a").stale
        fresh = provider.set_variable(sid, "c", 0.9)
        assert not fresh.stale and fresh.version == 2

    def test_delete_variable_drops_its_edges(self, provider: StateProvider, sid: str) -> None:
        provider.add_dependency(sid, "a", "b")
        provider.add_dependency(sid, "b", "c")
        provider.delete_variable(sid, "b")
        assert provider.get_dependencies(sid) == []

    # -- optimization locks ----------------------------------------------------------------

    def test_lock_gives_exclusive_write(self, provider: StateProvider, sid: str) -> None:
        record = provider.acquire_lock(sid, "a", owner="tok-1", optimizer_id="grid", lease=30)
        assert record.lock is not None and record.lock["optimizer_id"] == "grid"
        assert "tok-1" not in str(record.lock)  # the owner token is never shown
        with pytest.raises(errors.LockedError, match="grid") as info:
            provider.set_variable(sid, "a", 0.5)
        assert info.value.holder == "grid"
        assert provider.get_variable(sid, "a").value == 0.1
        token = current_lock_owner.set("tok-1")
        try:
            written = provider.set_variable(sid, "a", 0.5)
        finally:
            current_lock_owner.reset(token)
        assert written.value == 0.5 and written.lock is not None

    def test_lock_only_owner_releases(self, provider: StateProvider, sid: str) -> None:
        provider.acquire_lock(sid, "a", owner="tok-1", optimizer_id="grid")
        with pytest.raises(errors.LockedError, match="only its holder"):
            provider.release_lock(sid, "a", owner="tok-2")
        with pytest.raises(errors.LockedError, match="grid"):
            provider.acquire_lock(sid, "a", owner="tok-2", optimizer_id="random")
        assert provider.release_lock(sid, "a", owner="tok-1").lock is None
        provider.set_variable(sid, "a", 0.6)  # unlocked: anyone may write again
        assert provider.release_lock(sid, "a", owner="tok-1").lock is None  # already gone

    def test_lock_lease_expires(self, provider: StateProvider, sid: str) -> None:
        provider.acquire_lock(sid, "a", owner="tok-1", optimizer_id="grid", lease=0.3)
        time.sleep(0.5)
        assert provider.set_variable(sid, "a", 0.7).value == 0.7
        with pytest.raises(errors.LockedError, match="not locked"):
            provider.renew_lock(sid, "a", owner="tok-1")

    def test_lock_policies_preempt_and_wait(self, provider: StateProvider, sid: str) -> None:
        provider.acquire_lock(sid, "a", owner="tok-1", optimizer_id="grid")
        taken = provider.acquire_lock(
            sid, "a", owner="tok-2", optimizer_id="bayes", policy="preempt"
        )
        assert taken.lock is not None and taken.lock["optimizer_id"] == "bayes"
        timer = threading.Timer(0.3, provider.release_lock, (sid, "a"), {"owner": "tok-2"})
        timer.start()
        try:
            waited = provider.acquire_lock(
                sid, "a", owner="tok-3", optimizer_id="late", policy="wait", timeout=WAIT
            )
        finally:
            timer.join()
        assert waited.lock is not None and waited.lock["optimizer_id"] == "late"
        with pytest.raises(errors.LockedError):
            provider.acquire_lock(
                sid, "a", owner="tok-4", optimizer_id="x", policy="wait", timeout=0.2
            )
        with pytest.raises(errors.VariableValueError, match="policy"):
            provider.acquire_lock(sid, "b", owner="tok-4", optimizer_id="x", policy="shove")

    def test_lock_state_and_progress_are_watched(self, provider: StateProvider, sid: str) -> None:
        with provider.watch_variables(sid, ["a"]) as watch:
            provider.acquire_lock(sid, "a", owner="tok-1", optimizer_id="grid")
            assert _until(watch, "lock").record.lock is not None
            provider.renew_lock(sid, "a", owner="tok-1", progress={"iteration": 2, "best": 0.9})
            progress = _until(watch, "lock").record.lock
            assert progress is not None and progress["progress"] == {"iteration": 2, "best": 0.9}
            provider.release_lock(sid, "a", owner="tok-1")
            assert _until(watch, "lock").record.lock is None

    # -- session expiry and limits ---------------------------------------------------------

    def test_session_expires_without_heartbeat(self, make_provider: MakeProvider) -> None:
        with make_provider(sweep_interval=0.05) as provider:
            kept = provider.create_session(ttl=0.6)
            gone = provider.create_session(ttl=0.6)
            provider.register_variable(gone, "t", FLOAT, 0.5)
            watch = provider.watch_variables(gone)
            for _ in range(6):
                time.sleep(0.2)
                provider.heartbeat(kept)
            with pytest.raises(errors.SessionExpiredError):
                while watch.poll(timeout=WAIT) is not None:
                    pass
            with pytest.raises(errors.SessionError):
                provider.get_variable(gone, "t")
            assert provider.get_session(kept).session_id == kept

    def test_limits_refuse_clearly_and_change_nothing(self, make_provider: MakeProvider) -> None:
        with make_provider(max_variables=2, max_value_bytes=64, max_watchers=1) as provider:
            sid = provider.create_session()
            provider.register_variable(sid, "a", FLOAT, 0.1)
            provider.register_variable(sid, "text", make_spec(str), "short")
            with pytest.raises(errors.LimitExceededError, match="variables per session"):
                provider.register_variable(sid, "c", FLOAT, 0.1)
            with pytest.raises(errors.LimitExceededError, match="value size"):
                provider.set_variable(sid, "text", "x" * 100)
            assert provider.get_variable(sid, "text").value == "short"
            with (
                provider.watch_variables(sid),
                pytest.raises(errors.LimitExceededError, match="watchers"),
            ):  # include_initial: a stream of its own (a store client shares live watches)
                provider.watch_variables(sid, include_initial=True)
            assert [r.name for r in provider.list_variables(sid)] == ["a", "text"]
