"""A Redis that stalls (SIGSTOP: paused, not dead) under ``dspex serve --redis``: calls fail
within their deadline with a clear error instead of hanging; a write that was sent says that
its outcome is unknown (the store applies it once Redis wakes up, after the client stopped
waiting), never that it failed; once Redis wakes past that deadline the write is not applied
(the commit script checks the caller's deadline on Redis's clock: before, it landed then, and
in 1 of 4 runs after a later write the client made once Redis was back, overwriting it); after
SIGCONT everything works again and a watch of the session delivers every change in order.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest
from support.faults import TEXT, WAIT, record_figures
from support.redis_server import RedisServer
from support.serve_process import ServeProcess

from dspex import errors
from dspex.state.store import SessionStoreProvider

pytestmark = pytest.mark.timeout(120)

DEADLINE = 2.0
"""The client's call timeout while Redis is stopped."""
SETTLE = 3.0
"""Seconds after the store recovered that the test waits for the unknown write to land."""
PAST = 0.5
"""Seconds Redis stays stopped after the write's deadline (clocks agree to milliseconds)."""


def _fails_in_time(call: object) -> tuple[errors.StoreUnavailableError, float]:
    started = time.monotonic()
    with pytest.raises(errors.StoreUnavailableError) as failed:
        call()  # type: ignore[operator]
    return failed.value, time.monotonic() - started


def test_a_stalled_redis_fails_calls_in_time_and_recovers(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis_server:
        prefix = f"stall-{uuid.uuid4().hex[:8]}"
        with ServeProcess("--redis", redis_server.url, "--redis-prefix", prefix) as server:
            client = SessionStoreProvider(server.address, timeout=DEADLINE)
            try:
                _stall(redis_server, client)
            finally:
                client.close()


def _stall(redis_server: RedisServer, client: SessionStoreProvider) -> None:
    client.create_session("s")
    first = client.register_variable("s", "v", TEXT, "before").revision
    watch = client.watch_variables("s", after_revision=first)
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        read, read_took = _fails_in_time(lambda: client.get_variable("s", "v"))
        write, write_took = _fails_in_time(lambda: client.set_variable("s", "v", "sent"))
        time.sleep(PAST)  # Redis stays stopped a little past the write's deadline
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    for took in (read_took, write_took):
        assert took < DEADLINE + 2.0, f"a call took {took:.1f} s, its deadline is {DEADLINE} s"
    assert "did not answer within the call timeout" in str(read)
    assert not read.details.get("outcome_unknown")  # a read changes nothing
    assert write.details.get("outcome_unknown") is True, write  # before: a plain failure
    assert "outcome is unknown" in str(write) and "Read the variable back" in str(write)
    deadline = time.monotonic() + WAIT
    while True:  # recovers once Redis runs again
        try:
            after = client.set_variable("s", "v", "after")
            break
        except errors.StoreUnavailableError:
            assert time.monotonic() < deadline, "the store never recovered after SIGCONT"
            time.sleep(0.2)
    values: list[tuple[int, str]] = []
    settle = time.monotonic() + SETTLE
    while (
        not values
        or values[-1][0] < after.revision
        or ("sent" not in dict(values).values() and time.monotonic() < settle)
    ):  # every change up to "after", and the unknown write if the store applies it
        update = watch.poll(timeout=max(0.1, settle - time.monotonic()))
        if update is None:
            assert values and values[-1][0] >= after.revision, f"the watch stopped at {values}"
            continue
        values.append((update.revision, update.record.value))
    revisions = [revision for revision, _ in values]
    assert revisions == list(range(first + 1, revisions[-1] + 1))  # in order, no gap
    current = client.get_variable("s", "v")
    assert (current.revision, current.value) == values[-1]  # the watch agrees with the store
    assert "sent" not in dict(values).values(), values  # before: applied once Redis woke
    record_figures(
        "redis_sigstop", deadline_s=DEADLINE, read_failed_after_s=round(read_took, 2),
        write_failed_after_s=round(write_took, 2), late_write_applied=False,
    )  # fmt: skip
