"""Optimization locks and dependencies through the real store server (beyond the contract)."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from support import wait_until
from support.hardening import FLOAT, WAIT, child_hold_lock, spawned

import dspex
from dspex import errors
from dspex._model import VariableUpdate
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex._proto.bridge.v1 import store_pb2_grpc as pb_grpc
from dspex.state import LocalProvider, SessionContext, VariableWatch
from dspex.state.store import SessionStoreProvider, StoreServer
from dspex.state.wire import status as _status


@pytest.fixture(name="sid")
def _sid(local: LocalProvider) -> str:
    session_id = local.create_session()
    for name, value in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
        local.register_variable(session_id, name, FLOAT, value)
    return session_id


def _next(watch: VariableWatch, kind: str, timeout: float = WAIT) -> VariableUpdate:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        update = watch.poll(timeout=0.2)
        if update is not None and update.kind == kind:
            return update
    raise AssertionError(f"no {kind!r} update within {timeout}s")


def _in_thread(call: Any) -> Any:
    """Run ``call`` in a fresh thread (its own context) and return its result or error."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except errors.DspexError as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(WAIT)
    return out[0]


def test_optimizing_works_unchanged_over_the_store(server: StoreServer, sid: str) -> None:
    optimizer = SessionContext.connect(server.address, sid)
    other = SessionStoreProvider(server.address)
    try:
        with other.watch_variables(sid, ["a"]) as watch:
            with optimizer.optimizing("a", optimizer_id="grid", lease=30) as lock:
                assert _next(watch, "lock").record.lock is not None
                optimizer.set("a", 0.9)  # the holder writes through the store
                lock.report(iteration=3, best_score=0.75, best_value=0.9)
                progress = _next(watch, "lock").record.lock
                assert progress is not None and progress["progress"]["best_score"] == 0.75
                # Another context (a fresh thread does not hold the lock) is refused.
                refused = _in_thread(lambda: other.set_variable(sid, "a", 0.2))
                assert isinstance(refused, errors.LockedError) and refused.holder == "grid"
                batch = _in_thread(lambda: SessionContext(other, sid).update({"a": 0.3, "b": 0.3}))
                assert isinstance(batch, errors.BatchUpdateError) and "grid" in str(batch)
            assert _next(watch, "lock").record.lock is None  # released on exit
        record = other.get_variable(sid, "a")
        assert record.value == 0.9 and record.lock is None
        assert other.get_variable(sid, "b").value == 0.2  # the refused batch changed nothing
        assert other.set_variable(sid, "a", 0.4).value == 0.4
    finally:
        optimizer.provider.close()
        other.close()


def test_the_owner_token_never_travels_back(server: StoreServer, sid: str) -> None:
    client = SessionStoreProvider(server.address)
    try:
        record = client.acquire_lock(sid, "a", owner="s3cret-token", optimizer_id="x", lease=30)
        assert record.lock is not None
        assert set(record.lock) == {
            "optimizer_id", "owner", "acquired_at", "expires_at", "lease", "progress", "epoch",
        }  # fmt: skip
        assert "s3cret-token" not in repr(record) and record.lock["owner"] != "s3cret-token"
        assert record.lock["lease"] == 30 and record.lock["expires_at"] > time.time()
    finally:
        client.close()


def test_a_killed_holder_releases_its_lock_long_before_the_lease(
    server: StoreServer, sid: str
) -> None:
    lease = 600.0  # a release seen within WAIT cannot be lease expiry
    observer = SessionStoreProvider(server.address)
    try:
        with (
            observer.watch_variables(sid, ["a"]) as watch,
            spawned(child_hold_lock, server.address, sid, "a", lease) as (process, conn),
        ):
            assert conn.poll(60) and conn.recv() == "locked"
            locked = observer.get_variable(sid, "a")
            assert locked.lock is not None and locked.lock["optimizer_id"] == "doomed"
            assert locked.value == 1.5
            with pytest.raises(errors.LockedError, match="doomed"):
                observer.set_variable(sid, "a", 0.5)
            process.kill()  # SIGKILL: no release, no goodbye
            process.join(WAIT)
            deadline = time.monotonic() + WAIT * 3
            while True:
                update = _next(watch, "lock", timeout=max(0.1, deadline - time.monotonic()))
                if update.record.lock is None:
                    break
        assert observer.set_variable(sid, "a", 0.5).value == 0.5
    finally:
        observer.close()


def test_closing_the_client_releases_its_locks(server: StoreServer, sid: str) -> None:
    holder = SessionStoreProvider(server.address)
    observer = SessionStoreProvider(server.address)
    try:
        holder.acquire_lock(sid, "b", owner="tok", optimizer_id="leaving", lease=600)
        assert observer.get_variable(sid, "b").lock is not None
        holder.close()
        assert wait_until(lambda: observer.get_variable(sid, "b").lock is None)
    finally:
        observer.close()


def test_a_waiting_acquire_does_not_block_other_calls(server: StoreServer, sid: str) -> None:
    first = SessionStoreProvider(server.address)
    second = SessionStoreProvider(server.address)
    others = SessionStoreProvider(server.address, timeout=5)
    outcome: list[Any] = []
    try:
        first.acquire_lock(sid, "c", owner="tok-1", optimizer_id="first", lease=600)

        def wait_for_it() -> None:
            try:
                outcome.append(
                    second.acquire_lock(
                        sid, "c", owner="tok-2", optimizer_id="second", policy="wait"
                    )
                )
            except errors.DspexError as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        for value in (0.5, 0.6, 0.7):  # the server keeps answering while the acquire waits
            assert others.set_variable(sid, "a", value).value == value
            assert others.ping("still here") == "still here"
        assert not outcome  # still waiting
        first.release_lock(sid, "c", owner="tok-1")
        waiter.join(WAIT)
        assert len(outcome) == 1 and not isinstance(outcome[0], Exception), outcome
        assert outcome[0].lock["optimizer_id"] == "second"
    finally:
        for client in (first, second, others):
            client.close()


def test_a_waiting_acquire_gives_up_at_its_timeout_and_takes_nothing(
    server: StoreServer, sid: str, local: LocalProvider
) -> None:
    holder = SessionStoreProvider(server.address)
    waiter = SessionStoreProvider(server.address)
    try:
        holder.acquire_lock(sid, "c", owner="tok-1", optimizer_id="first", lease=600)
        with pytest.raises(errors.LockedError, match="first"):
            waiter.acquire_lock(
                sid, "c", owner="tok-2", optimizer_id="late", policy="wait", timeout=0.3
            )
        holder.release_lock(sid, "c", owner="tok-1")
        time.sleep(0.3)  # a wait that was still running would take the freed lock now
        assert local.get_variable(sid, "c").lock is None
    finally:
        holder.close()
        waiter.close()


def test_lock_calls_with_bad_input_are_refused_clearly(server: StoreServer, sid: str) -> None:
    channel = grpc.insecure_channel(server.address.removeprefix("grpc://"))
    stub = pb_grpc.SessionStoreStub(channel)
    acquire = pb.AcquireLockRequest
    cases = [
        (acquire(session_id=sid, name="a", optimizer_id="x", lease=5), "store_protocol"),
        (acquire(session_id=sid, name="a", owner="t", lease=0), "invalid_value"),
        (acquire(session_id=sid, name="a", owner="t", lease=5, policy="x"), "invalid_value"),
        (acquire(session_id=sid, name="zz", owner="t", lease=5), "variable_not_found"),
        (acquire(session_id=sid, name="a", owner="t", lease=float("inf")), "invalid_value"),
        (acquire(session_id=sid, name="a", owner="t", lease=5, timeout=-1.0), "invalid_value"),
    ]
    try:
        for request, code in cases:
            with pytest.raises(grpc.RpcError) as caught:
                stub.AcquireLock(request, timeout=WAIT)
            assert dict(caught.value.trailing_metadata())[_status.CODE_KEY] == code
        renew = pb.RenewLockRequest(session_id=sid, name="a", owner="t", progress_json="[1]")
        with pytest.raises(grpc.RpcError) as caught:
            stub.RenewLock(renew, timeout=WAIT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        gone_holder = (("dspex-lock-holder", "no-such-holder"),)
        request = pb.AcquireLockRequest(session_id=sid, name="a", owner="t", lease=5)
        with pytest.raises(grpc.RpcError) as caught:
            stub.AcquireLock(request, timeout=WAIT, metadata=gone_holder)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (
            stub.GetVariable(pb.GetVariableRequest(session_id=sid, name="a")).variable.lock_json
            == ""
        )
    finally:
        channel.close()


def test_session_verbs_for_dependencies_and_locks_over_the_store(server: StoreServer) -> None:
    recomputed: list[Any] = []
    with dspex.Session(store=server.address) as session:
        session.register("base", float, 1.0)
        session.register("double", float, 2.0)
        session.register("label", str, "x")

        def double(upstream: Any) -> float:
            recomputed.append(dict(upstream))
            return float(upstream["base"] * 2)

        session.depend("base", "double", recompute=double)
        session.depend("double", "label")
        with pytest.raises(errors.CycleError, match="label -> base -> double -> label"):
            session.depend("label", "base")
        assert session.dependents("base") == ["double", "label"]
        session.set("base", 4.0)
        assert wait_until(lambda: session.variable("double").value == 8.0)
        assert not session.variable("double").stale
        assert wait_until(lambda: session.variable("label").stale)
        with session.optimizing("base", optimizer_id="grid") as lock:
            session.set("base", 5.0)
            lock.report(iteration=1)
        assert session.variable("base").lock is None
