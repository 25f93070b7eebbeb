"""A watch never goes silent: what breaks in this process ends it loudly (issue 12).

An exception that is not a dspex error, raised while a client handles its watch stream (the
consumer's ``deliver_to`` callback, or decoding an update this process cannot read), used to
end the reading thread and nothing else: the consumer iterating or polling the watch waited
forever, and a read cache kept serving what it had. Now the watch ends with ``WatchError``
(the exception as ``__cause__``, ``resume_from`` the last update the consumer got), and a read
cache stops serving the session. Every consumer runs on a thread of its own, joined with a
bound, against a real store on loopback.

The undecodable update is real: a variable whose metadata holds an integer of 5,000 digits,
registered by a process and held by a ``dspex serve`` that both run with
``PYTHONINTMAXSTRDIGITS=0``, while this process keeps Python's default limit of 4,300 digits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from support import wait_until
from support.bridge import WAIT
from support.serve_process import ServeProcess
from support.watch_consumers import WATCHES, Consume, Consumer, iterate, poll, receiving

from dspex._model import VariableUpdate, make_spec
from dspex.errors import WatchError, WatchLaggedError
from dspex.state import LocalProvider, VariableWatch
from dspex.state.store import CachedProvider, SessionStoreProvider, StoreServer

UNLIMITED = {"PYTHONINTMAXSTRDIGITS": "0"}
"""Environment of the processes that can write and hold the 5,000-digit integer."""

_REGISTER_HUGE = """
import sys
from dspex._model import make_spec
from dspex.state.store import SessionStoreProvider
client = SessionStoreProvider(sys.argv[1])
client.register_variable(sys.argv[2], "m", make_spec(float), 0.0, metadata={"n": 10**5000})
client.close()
"""


@pytest.fixture(name="unlimited_server")
def unlimited_serve_process() -> Iterator[ServeProcess]:
    with ServeProcess(env=UNLIMITED) as server:
        yield server


def _write_huge(address: str, session_id: str) -> None:
    """Register ``m``, its metadata holding a 5,000-digit integer, from another process that
    can encode it."""
    done = subprocess.run(
        [sys.executable, "-c", _REGISTER_HUGE, address, session_id],
        env={**os.environ, **UNLIMITED}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _session(client: SessionStoreProvider) -> str:
    session_id = client.create_session()
    client.register_variable(session_id, "t", make_spec(float), 0.0)
    return session_id


def _raising_on_second(got: list[VariableUpdate]) -> Callable[[VariableUpdate], None]:
    def apply(update: VariableUpdate) -> None:
        if got:
            raise RuntimeError("the consumer's callback broke")
        got.append(update)

    return apply


def _deliver_then_iterate(watch: VariableWatch, got: list[VariableUpdate]) -> None:
    assert watch.deliver_to(_raising_on_second(got))
    got.extend(watch)


def _deliver_then_poll(watch: VariableWatch, got: list[VariableUpdate]) -> None:
    assert watch.deliver_to(_raising_on_second(got))
    poll(watch, got)


@pytest.mark.parametrize(
    "consume", [_deliver_then_iterate, _deliver_then_poll], ids=["iterate", "poll"]
)
def test_a_deliver_to_callback_that_raises_ends_the_watch_with_a_watch_error(
    server: StoreServer, client: SessionStoreProvider, local: LocalProvider, session_id: str,
    consume: Consume,
) -> None:  # fmt: skip
    watch = client.watch_variables(session_id, **WATCHES["dedicated"])
    consumer = Consumer(watch, consume)
    receiving(consumer, local, session_id)  # got one; the callback raises on the next
    failure = consumer.raised()  # before the fix: still blocked
    assert isinstance(failure, WatchError), failure
    assert not isinstance(failure, WatchLaggedError)
    assert isinstance(failure.__cause__, RuntimeError)
    assert "deliver_to callback raised RuntimeError" in str(failure)
    [first] = consumer.got
    assert failure.details["resume_from"] == first.revision
    assert f"after_revision={first.revision}" in str(failure)
    with client.watch_variables(session_id, after_revision=first.revision) as again:
        update = again.poll(WAIT)  # the update the callback failed on comes again
    assert update is not None and update.revision == first.revision + 1
    assert wait_until(lambda: server.watch_count == 0, WAIT)


def test_a_callback_that_raises_on_an_initial_record_says_to_read_them_again(
    client: SessionStoreProvider, session_id: str
) -> None:
    def apply(update: VariableUpdate) -> None:
        raise KeyError(update.name)

    def consume(watch: VariableWatch, got: list[VariableUpdate]) -> None:
        assert watch.deliver_to(apply)
        got.extend(watch)

    consumer = Consumer(client.watch_variables(session_id, include_initial=True), consume)
    failure = consumer.raised()  # before the fix: still blocked
    assert isinstance(failure, WatchError) and isinstance(failure.__cause__, KeyError)
    assert "resume_from" not in failure.details  # a resume would not give the records again
    assert "watch again with include_initial=True" in str(failure)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("consume", [iterate, poll], ids=["iterate", "poll"])
@pytest.mark.parametrize("kind", WATCHES, ids=list(WATCHES))
def test_an_update_this_process_cannot_decode_ends_the_watch_with_a_watch_error(
    unlimited_server: ServeProcess, kind: str, consume: Consume
) -> None:
    client = SessionStoreProvider(unlimited_server.address)
    try:
        session_id = _session(client)
        consumers = [
            Consumer(client.watch_variables(session_id, **WATCHES[kind]), consume)
            for _ in range(2)
        ]
        for consumer in consumers:
            receiving(consumer, client, session_id)
        _write_huge(unlimited_server.address, session_id)
        for consumer in consumers:
            failure = consumer.raised()  # before the fix: blocked, or a bare ValueError
            assert isinstance(failure, WatchError), repr(failure)
            assert isinstance(failure.__cause__, ValueError)
            assert "ValueError" in str(failure) and "after_revision=" in str(failure)
            assert failure.details["resume_from"] == consumer.got[-1].revision
        if kind == "shared":  # before the fix a new watch joined the dead stream: silent
            with client.watch_variables(session_id) as watch:
                revision = client.set_variable(session_id, "t", 0.25).revision
                update = watch.poll(WAIT)
            assert update is not None and update.revision == revision
    finally:
        client.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("linger", [0.0, 0.05], ids=["cache", "remote worker cache"])
def test_a_read_cache_whose_stream_breaks_stops_serving_stale_values(
    unlimited_server: ServeProcess, linger: float
) -> None:
    writer = SessionStoreProvider(unlimited_server.address)
    cached = CachedProvider(SessionStoreProvider(unlimited_server.address), linger=linger)
    try:
        session_id = _session(writer)
        cached.follow(session_id)
        assert wait_until(lambda: cached.is_live(session_id), WAIT)
        _write_huge(unlimited_server.address, session_id)
        writer.set_variable(session_id, "t", 0.5)
        # before the fix: the cache stayed live on a dead stream and served 0.0 for good
        assert wait_until(lambda: cached.get_variable(session_id, "t").value == 0.5, WAIT)
        writer.set_variable(session_id, "t", 0.75)
        assert wait_until(lambda: cached.get_variable(session_id, "t").value == 0.75, WAIT)
    finally:
        cached.close()
        writer.close()
