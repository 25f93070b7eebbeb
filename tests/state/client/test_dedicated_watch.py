"""A dedicated watch stream (resumed or with initial records) read by its own consumer.

Iterating the watch reads the gRPC stream on the iterating thread: no reader thread exists and
no update is handed between threads. A poll with a timeout (which a thread blocked in gRPC
cannot honour) or ``deliver_to`` hands the reading to a thread of the stream's own, for good.
Order, lag with ``resume_from``, cancel and the start timeout hold either way.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest
from support import wait_until
from support.bridge import FLOAT, WAIT, served
from support.serve_process import ServeProcess

import dspex.errors as errors
from dspex._model import VariableUpdate, make_spec
from dspex.state import LocalProvider
from dspex.state.core.watch import VariableWatch
from dspex.state.store import SessionStoreProvider, StoreServer


def _reader_threads(session_id: str) -> list[str]:
    """The names of the live threads reading a dedicated stream of the session."""
    return [t.name for t in threading.enumerate() if t.name == f"dspex-watch-{session_id[:12]}"]


def _consume(watch: VariableWatch, count: int, out: list[tuple[int, str]]) -> threading.Thread:
    """Iterate ``watch`` on a thread of its own until ``count`` updates arrived."""

    def run() -> None:
        for update in watch:
            out.append((update.revision, threading.current_thread().name))
            if len(out) == count:
                return

    thread = threading.Thread(target=run, name="consumer", daemon=True)
    thread.start()
    return thread


def test_an_iterated_watch_is_read_by_its_consumer_with_no_reader_thread(
    server: StoreServer, client: SessionStoreProvider, local: LocalProvider, session_id: str
) -> None:
    start = local.get_session(session_id).revision
    watch = client.watch_variables(session_id, after_revision=start)
    got: list[tuple[int, str]] = []
    consumer = _consume(watch, 30, got)
    for step in range(30):
        client.set_variable(session_id, "t", step / 100)
    consumer.join(WAIT)
    assert [revision for revision, _ in got] == list(range(start + 1, start + 31))
    # every update was read from the stream by the consumer itself: no thread in between
    assert _reader_threads(session_id) == []
    watch.cancel()
    assert wait_until(lambda: server.watch_count == 0)


def test_a_poll_with_a_timeout_hands_the_stream_to_a_thread_with_no_gap(
    client: SessionStoreProvider, local: LocalProvider, session_id: str
) -> None:
    start = local.get_session(session_id).revision
    with client.watch_variables(session_id, after_revision=start) as watch:
        client.set_variable(session_id, "t", 0.1)
        first = next(watch)  # read on this thread
        assert _reader_threads(session_id) == []
        for step in range(10):
            client.set_variable(session_id, "t", step / 10)
        polled = watch.poll(WAIT)  # a timeout: from now on the stream has its own reader
        assert len(_reader_threads(session_id)) == 1
        client.set_variable(session_id, "t", 1.5)
        rest = [next(watch) for _ in range(10)]
    assert polled is not None
    revisions = [u.revision for u in [first, polled, *rest]]
    assert revisions == list(range(start + 1, start + 13))


def test_cancel_from_another_thread_ends_a_consumer_blocked_on_the_stream(
    server: StoreServer, client: SessionStoreProvider, session_id: str
) -> None:
    watch = client.watch_variables(session_id, include_initial=True)
    got: list[tuple[int, str]] = []
    consumer = _consume(watch, 1000, got)
    assert wait_until(lambda: len(got) == 1)  # the initial record; now blocked in gRPC
    watch.cancel()
    consumer.join(WAIT)
    assert not consumer.is_alive() and watch.closed
    assert wait_until(lambda: server.watch_count == 0)


def test_a_consumer_that_falls_behind_gets_every_update_or_a_lag_it_resumes_from() -> None:
    local = LocalProvider(watch_queue_size=4)
    session_id = local.create_session()
    local.register_variable(session_id, "big", make_spec(str), "")
    total = 200
    with served(local) as server:
        client = SessionStoreProvider(server.address)
        try:
            seen = _read_until_lagged(client, session_id, total, local)
            with client.watch_variables(session_id, after_revision=seen[-1]) as again:
                seen.extend(update.revision for update in _take(again, total - len(seen)))
        finally:
            client.close()
    assert seen == list(range(2, total + 2))


def _read_until_lagged(
    client: SessionStoreProvider, session_id: str, total: int, local: LocalProvider
) -> list[int]:
    """Read one update by iterating, write ``total`` large values unread, then iterate until
    the watch ends with ``watch_lagged``: the revisions seen, in order, resuming from the last."""
    seen: list[int] = []
    with client.watch_variables(session_id, after_revision=1) as watch:
        local.set_variable(session_id, "big", "first")
        seen.append(next(watch).revision)
        for step in range(1, total):  # nobody reads: the transport fills, the server lags it
            local.set_variable(session_id, "big", f"{step:04d}" + "x" * 100_000)
        with pytest.raises(errors.WatchLaggedError) as caught:
            seen.extend(update.revision for update in watch)
    assert caught.value.resume_from == seen[-1] and len(seen) < total
    assert seen == list(range(2, seen[-1] + 1))
    return seen


def _take(watch: VariableWatch, count: int) -> Iterator[VariableUpdate]:
    for _ in range(count):
        yield next(watch)


def test_a_watch_the_store_never_confirms_times_out() -> None:
    serve = ServeProcess().start()
    try:
        client = SessionStoreProvider(serve.address, timeout=1.0)
        session_id = client.create_session()
        client.register_variable(session_id, "t", FLOAT, 0.5)
        assert serve.process is not None
        serve.process.send_signal(signal.SIGSTOP)  # the call is sent, nothing answers
        try:
            with pytest.raises(errors.StoreUnavailableError, match="confirm the watch"):
                client.watch_variables(session_id, after_revision=0)
        finally:
            serve.process.send_signal(signal.SIGCONT)
        with client.watch_variables(session_id, include_initial=True) as watch:
            assert next(watch).record.value == 0.5  # the same client watches once it answers
        client.close()
    finally:
        serve.kill()
