"""Closing a store client, or what owns one, ends every watch it opened (issue 12).

As when a local provider closes: a consumer iterating the watch stops (StopIteration), a poll
returns None and ``closed`` is True, whether the watch is dedicated or on the shared stream and
however it is consumed. Before, a consumer blocked on the watch waited forever. Each consumer
runs on a thread of its own, joined with a bound, against a real store server on loopback.
"""

from __future__ import annotations

import threading

import pytest
from support import wait_until
from support.bridge import WAIT
from support.faults import TEXT, stalled_loop
from support.watch_consumers import CONSUMERS, ENDS, WATCHES, Consumer, iterate, receiving

import dspex
from dspex import errors
from dspex.state import LocalProvider, SessionContext
from dspex.state.client import convert
from dspex.state.client.streams import StreamLoop
from dspex.state.server.metrics import ServerMetrics
from dspex.state.store import CachedProvider, SessionStoreProvider, StoreServer
from dspex.state.wire.channel import parse_address


@pytest.mark.parametrize("consume", CONSUMERS, ids=list(CONSUMERS))
@pytest.mark.parametrize("kind", WATCHES, ids=list(WATCHES))
def test_closing_the_client_ends_a_watch_its_consumer_waits_on(
    server: StoreServer, local: LocalProvider, session_id: str, kind: str, consume: str
) -> None:
    client = SessionStoreProvider(server.address)
    try:
        watch = client.watch_variables(session_id, **WATCHES[kind])
        consumer = Consumer(watch, CONSUMERS[consume])
        receiving(consumer, local, session_id)
    finally:
        client.close()  # not watch.cancel()
    assert consumer.ended()  # before the fix: still blocked
    assert watch.poll(0) is None
    assert wait_until(lambda: server.watch_count == 0, WAIT)


def test_closing_a_cached_provider_ends_its_own_streams_and_its_users_watches(
    server: StoreServer, local: LocalProvider, session_id: str
) -> None:
    cached = CachedProvider(SessionStoreProvider(server.address))
    try:
        cached.follow(session_id)  # the cache's own stream, followed on its own thread
        consumers = [
            Consumer(cached.watch_variables(session_id, **options), iterate)
            for options in WATCHES.values()
        ]
        for consumer in consumers:
            receiving(consumer, local, session_id)
    finally:
        cached.close()
    assert all(consumer.ended() for consumer in consumers)
    assert wait_until(lambda: not _threads("dspex-cache-"), ENDS)
    assert wait_until(lambda: server.watch_count == 0, WAIT)


def test_a_provider_closed_under_a_session_context_ends_its_watches(
    server: StoreServer, local: LocalProvider, session_id: str
) -> None:
    context = SessionContext.connect(server.address, session_id)
    try:
        consumer = Consumer(context.watch("t"), iterate)
        receiving(consumer, local, session_id)
    finally:
        context.provider.close()
    assert consumer.ended()


def test_closing_a_joined_session_that_stays_in_the_store_ends_its_watches(
    server: StoreServer, local: LocalProvider, session_id: str
) -> None:
    session = dspex.Session(server.address, session_id=session_id)  # joined: kept open
    try:
        consumer = Consumer(session.watch(initial=True), iterate)
        receiving(consumer, local, session_id)
    finally:
        session.close()
    assert consumer.ended()
    assert local.get_session(session_id).session_id == session_id  # still open


def _threads(prefix: str) -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(prefix)]


def test_closing_the_client_ends_a_lock_wait_with_a_clear_error(local: LocalProvider) -> None:
    metrics = ServerMetrics()  # to see the wait arrive at the store
    session_id = local.create_session()
    local.register_variable(session_id, "t", TEXT, "a")
    local.acquire_lock(session_id, "t", owner="first", optimizer_id="first", lease=60)
    failures: list[BaseException] = []
    with StoreServer.start(local, "127.0.0.1:0", metrics=metrics) as server:
        waiter = SessionStoreProvider(server.address)

        def wait_for_the_lock() -> None:
            try:
                waiter.acquire_lock(session_id, "t", owner="b", optimizer_id="b", policy="wait")
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=wait_for_the_lock, daemon=True)
        thread.start()
        assert wait_until(lambda: metrics.registry.get_sample_value("dspex_lock_waiters") == 1)
        waiter.close()
        thread.join(ENDS)
        # before the fix: it retried on a fresh channel, waiting for the lock as long as the
        # store runs (its HoldLocks stream ended too, which looked like a broken connection)
        assert not thread.is_alive()
    [failure] = failures
    assert isinstance(failure, errors.StoreUnavailableError)
    assert "was closed during the call" in str(failure)
    assert failure.details["closed"] is True


def test_closing_a_cache_waiting_to_reconnect_ends_it_at_once_leaving_no_channel(
    local: LocalProvider, session_id: str
) -> None:
    server = StoreServer.start(local, "127.0.0.1:0")
    inner = SessionStoreProvider(server.address)
    cached = CachedProvider(inner, min_backoff=30.0, max_backoff=30.0)
    try:
        cached.follow(session_id)
        server.stop(grace=0.1)
        assert wait_until(lambda: not cached.is_live(session_id))  # now pausing 30 s
    finally:
        cached.close()
        server.stop()
    # before the fix: it slept out its pause, then reconnected the closed client to try again
    assert wait_until(lambda: not _threads("dspex-cache-"), ENDS)
    assert inner._channel is None  # nothing reopened behind the close


def test_a_watch_starting_while_its_client_closes_fails_saying_so(
    server: StoreServer, session_id: str
) -> None:
    """The store cannot confirm the watch (its loop is held), the client closes meanwhile: the
    start fails at once with ``closed=True`` rather than waiting or handing back a dead watch."""
    client = SessionStoreProvider(server.address)
    client.ping()  # connected: the watch call itself reaches the held store
    outcome: list[BaseException] = []

    def start() -> None:
        try:
            client.watch_variables(session_id, after_revision=0)
        except BaseException as exc:  # recorded for the assertions below
            outcome.append(exc)

    with stalled_loop(server._loop, 3.0):
        starter = threading.Thread(target=start)
        starter.start()
        assert wait_until(lambda: len(client._streams) == 1, WAIT)
        client.close()
        starter.join(WAIT)
        assert not starter.is_alive()
    [error] = outcome
    assert isinstance(error, errors.StoreUnavailableError), repr(error)
    assert error.details.get("closed") is True  # before: no such detail


@pytest.mark.parametrize("method", ["WatchVariables", "HoldLocks"])
def test_a_stream_started_on_a_closed_stream_loop_says_its_client_was_closed(
    server: StoreServer, session_id: str, method: str
) -> None:
    """A shared watch or a lock-holder stream racing ``close()`` can reach the client's stream
    loop after it closed: before, a bare ``RuntimeError: Event loop is closed``."""
    loop = StreamLoop(parse_address(server.address), 4 * 1024 * 1024)
    loop.close()
    ended: list[object] = []
    request = (
        convert.hold_locks_request()
        if method == "HoldLocks"
        else convert.watch_variables_request(session_id, (), None, False, 0.0)
    )
    with pytest.raises(errors.StoreUnavailableError) as closed:
        loop.follow(request, (), lambda kind, payload: True, ended.append, method=method)
    assert closed.value.details["closed"] is True
    assert ended == []  # nothing started, so nothing to end
