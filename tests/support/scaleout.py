"""Helpers for the scale-out tests: several ``dspex serve --redis`` processes on one Redis, and
writer processes (spawned, each with its own client) that start together.

Targets that run in spawned processes live here (not in test modules) so the child can import
them by name.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from dspex._model import VariableUpdate, make_spec
from dspex.errors import VersionConflictError
from dspex.state.store import SessionStoreProvider
from support.serve_process import ServeProcess

WAIT = 30.0
"""Upper bound for anything that should happen "soon" (the machine may be loaded)."""

INT = make_spec(int)


@contextmanager
def redis_servers(url: str, count: int, *flags: str) -> Iterator[list[ServeProcess]]:
    """``count`` store servers sharing the Redis at ``url`` under a fresh key prefix."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with ExitStack() as stack:
        yield [
            stack.enter_context(ServeProcess("--redis", url, "--redis-prefix", prefix, *flags))
            for _ in range(count)
        ]


@contextmanager
def clients(*servers: ServeProcess) -> Iterator[list[SessionStoreProvider]]:
    """One store client per server, closed afterwards."""
    opened = [SessionStoreProvider(server.address, timeout=WAIT) for server in servers]
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


def take(watch: Any, count: int, timeout: float = WAIT) -> list[VariableUpdate]:
    """The next ``count`` updates of ``watch`` (fewer if they do not come within ``timeout``)."""
    deadline = time.monotonic() + timeout
    updates: list[VariableUpdate] = []
    while len(updates) < count and time.monotonic() < deadline:
        update = watch.poll(max(0.0, deadline - time.monotonic()))
        if update is not None:
            updates.append(update)
    return updates


def run_together(target: Callable[..., Any], jobs: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``target(conn, go, job)`` in one spawned process per job, all released at the same
    moment by the ``go`` event; return their results in order (a child's error fails the test).
    """
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    pipes, processes = [], []
    for job in jobs:
        parent, child = context.Pipe()
        process = context.Process(target=_run, args=(child, target, go, job), daemon=True)
        process.start()
        pipes.append(parent)
        processes.append(process)
    try:
        for parent in pipes:  # each child says ready once its client is connected
            assert parent.poll(60), "a spawned writer did not start within 60 s"
            assert parent.recv() == "ready"
        go.set()
        results = []
        for parent in pipes:
            assert parent.poll(120), "a spawned writer did not finish within 120 s"
            kind, result = parent.recv()
            assert kind == "ok", f"spawned {target.__name__} failed: {result}"
            results.append(result)
        return results
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def _run(conn: Any, target: Callable[..., Any], go: Any, job: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", target(conn, go, job)))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


# -- spawned-process targets --------------------------------------------------------------


def child_writer(conn: Any, go: Any, job: tuple[Any, ...]) -> list[tuple[str, int, int, int]]:
    """job = (address, session_id, names, count): set each name ``count`` times; return every
    ack as (name, value, version, revision)."""
    address, session_id, names, count = job
    client = SessionStoreProvider(address, timeout=WAIT)
    try:
        client.wait_ready(WAIT)
        conn.send("ready")
        go.wait(60)
        acked = []
        for step in range(count):
            for name in names:
                record = client.set_variable(session_id, name, step)
                acked.append((name, record.value, record.version, record.revision))
        return acked
    finally:
        client.close()


def child_incrementer(conn: Any, go: Any, job: tuple[Any, ...]) -> int:
    """job = (address, session_id, name, count): add 1 to ``name`` ``count`` times with
    compare-and-set; return how many compare-and-sets lost a race."""
    address, session_id, name, count = job
    client = SessionStoreProvider(address, timeout=WAIT)
    try:
        client.wait_ready(WAIT)
        conn.send("ready")
        go.wait(60)
        conflicts = 0
        for _ in range(count):
            while True:
                record = client.get_variable(session_id, name)
                try:
                    client.set_variable(
                        session_id, name, record.value + 1, expected_version=record.version
                    )
                    break
                except VersionConflictError:
                    conflicts += 1
        return conflicts
    finally:
        client.close()
