"""Helpers for the bridge tests: real servers, raw wire access, and spawned-process targets.

Targets that run in spawned processes live here (not in test modules) so the child can import
them by name.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from dspex._model import make_spec
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex._proto.bridge.v1 import store_pb2_grpc as pb_grpc
from dspex.state import LocalProvider, SessionContext
from dspex.state.store import SessionStoreProvider, StoreLimits, StoreServer
from support import wait_until

WAIT = 10.0
"""Upper bound for anything that should happen "soon" (generous: the machine may be loaded)."""

FLOAT = make_spec(float, min=0.0, max=2.0)


@contextmanager
def served(
    local: LocalProvider | None = None, address: str = "127.0.0.1:0", **limits: Any
) -> Iterator[StoreServer]:
    """A real store server (background thread) around ``local``; stopped afterwards."""
    server = StoreServer.start(
        local if local is not None else LocalProvider(), address, limits=StoreLimits(**limits)
    )
    try:
        yield server
    finally:
        server.stop(grace=0.2)


@contextmanager
def raw_stub(address: str) -> Iterator[Any]:
    """A raw generated stub on its own channel, for wire-level tests."""
    channel = grpc.insecure_channel(address.removeprefix("grpc://"))
    try:
        yield pb_grpc.SessionStoreStub(channel)
    finally:
        channel.close()


def spawn(target: Callable[..., Any], *args: Any) -> Any:
    """Run ``target(*args)`` in a spawned process and return what it returns (via a pipe)."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_run_and_send, args=(child, target, args), daemon=True)
    process.start()
    try:
        if not parent.poll(60):
            raise TimeoutError(f"spawned {target.__name__} gave no answer within 60 s")
        kind, result = parent.recv()
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    if kind == "error":
        raise AssertionError(f"spawned {target.__name__} failed: {result}")
    return result


def _run_and_send(conn: Any, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", target(*args)))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


# -- spawned-process targets --------------------------------------------------------------


def child_set(address: str, session_id: str, name: str, value: Any) -> tuple[int, str]:
    """Set through a plain client in another process; return (version, writer)."""
    provider = SessionStoreProvider(address)
    try:
        record = provider.set_variable(session_id, name, value)
        return record.version, record.writer
    finally:
        provider.close()


def child_context_set(address: str, session_id: str, name: str, value: Any) -> int:
    """Set through ``SessionContext.connect`` in another process; return the version."""
    context = SessionContext.connect(address, session_id)
    try:
        return context.set(name, value).version
    finally:
        context.provider.close()


def child_wait_for(address: str, session_id: str, name: str, value: Any) -> Any:
    """Read through ``SessionContext.connect`` until ``name`` equals ``value`` (or give up)."""
    context = SessionContext.connect(address, session_id)
    try:
        wait_until(lambda: context.get(name) == value)
        return context.get(name)
    finally:
        context.provider.close()


def child_read_pickled(provider: SessionStoreProvider, session_id: str, name: str) -> Any:
    """Read through a provider that was pickled into this process."""
    try:
        return provider.get_variable(session_id, name).value
    finally:
        provider.close()


def child_watchers(address: str, session_id: str, count: int, expected: int, conn: Any) -> None:
    """Open ``count`` watches, say ready, then report how many updates each got (in order).

    Each watch resumes from the current revision, so it gets a server stream of its own (live
    watches of one client would share a single stream).
    """
    provider = SessionStoreProvider(address, timeout=60.0)
    start = provider.get_session(session_id).revision
    watches = [
        provider.watch_variables(session_id, ["n"], after_revision=start) for _ in range(count)
    ]
    received: list[list[int]] = [[] for _ in range(count)]
    done = threading.Event()
    remaining = [count]
    lock = threading.Lock()

    def consume(index: int) -> None:
        out = received[index]
        while len(out) < expected:
            update = watches[index].poll(timeout=120)
            if update is None:
                break
            out.append(update.record.value)
        with lock:
            remaining[0] -= 1
            if not remaining[0]:
                done.set()

    for index in range(count):
        threading.Thread(target=consume, args=(index,), daemon=True).start()
    conn.send("ready")
    done.wait(180)
    for watch in watches:
        watch.cancel()
    conn.send(received)
    provider.close()


def raw_update_request(session_id: str, entries: list[Any], atomic: bool = True) -> Any:
    """An UpdateVariables request built by hand (entries are NamedValue messages)."""
    return pb.UpdateVariablesRequest(session_id=session_id, values=entries, atomic=atomic)


def child_hold_watches(address: str, session_id: str, count: int, conn: Any) -> None:
    """Open ``count`` watches (each its own stream: include_initial), say ready, then block."""
    provider = SessionStoreProvider(address)
    watches = [provider.watch_variables(session_id, include_initial=True) for _ in range(count)]
    conn.send(len(watches))
    time.sleep(600)
