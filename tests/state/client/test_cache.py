"""The worker read cache: coherent with its own writes, others' writes, deletes and restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from support import wait_until
from support.bridge import FLOAT, served
from support.faults import stalled_loop

import dspex.errors as errors
from dspex._model import VariableRecord, make_spec
from dspex.state import LocalProvider
from dspex.state.store import CachedProvider, SessionStoreProvider, StoreServer


@pytest.fixture(name="cached")
def _cached(server: StoreServer, session_id: str) -> Iterator[CachedProvider]:
    cached = CachedProvider(SessionStoreProvider(server.address))
    cached.follow(session_id)
    yield cached
    cached.close()


def test_reads_see_own_writes_at_once(cached: CachedProvider, session_id: str) -> None:
    for step in range(20):
        cached.set_variable(session_id, "t", step / 10)
        assert cached.get_variable(session_id, "t").value == step / 10
    cached.update_variables(session_id, {"t": 1.5})
    assert cached.get_variable(session_id, "t").value == 1.5
    cached.rollback_variable(session_id, "t", 1)
    assert cached.get_variable(session_id, "t").value == 0.7
    cached.register_variable(session_id, "new", FLOAT, 0.1)
    assert cached.get_variable(session_id, "new").value == 0.1
    cached.delete_variable(session_id, "new")
    with pytest.raises(errors.VariableNotFoundError):
        cached.get_variable(session_id, "new")


def test_hot_reads_come_from_the_cache(cached: CachedProvider, session_id: str) -> None:
    assert wait_until(lambda: cached.is_live(session_id))
    # Once the stream delivered it, every read returns the same snapshot: no round trip.
    get = cached.get_variable
    assert wait_until(lambda: get(session_id, "t") is get(session_id, "t"))
    first = get(session_id, "t")
    assert all(get(session_id, "t") is first for _ in range(100))


def test_hot_multi_reads_come_from_the_cache(cached: CachedProvider, session_id: str) -> None:
    cached.register_variable(session_id, "u", FLOAT, 0.2)
    assert wait_until(lambda: cached.is_live(session_id))

    def read() -> dict[str, VariableRecord]:
        return cached.get_variables(session_id, ["t", "u"])

    # The store answers with new records on every call; the cache with the records it holds.
    assert wait_until(lambda: read()["t"] is read()["t"] and read()["u"] is read()["u"])
    first = read()
    assert all(read()["t"] is first["t"] and read()["u"] is first["u"] for _ in range(100))
    assert first["t"] is cached.get_variable(session_id, "t")
    assert first["t"].value == 0.7 and first["u"].value == 0.2
    with pytest.raises(errors.VariableNotFoundError):  # a miss still asks the store
        cached.get_variables(session_id, ["t", "missing"])


def test_multi_reads_see_own_writes_at_once(cached: CachedProvider, session_id: str) -> None:
    cached.register_variable(session_id, "u", FLOAT, 0.2)
    for step in range(20):
        cached.update_variables(session_id, {"t": step / 10, "u": step / 20})
        records = cached.get_variables(session_id, ["t", "u"])
        assert (records["t"].value, records["u"].value) == (step / 10, step / 20)
    cached.delete_variable(session_id, "u")
    with pytest.raises(errors.VariableNotFoundError):
        cached.get_variables(session_id, ["t", "u"])


def test_multi_reads_see_others_writes_at_one_revision(
    cached: CachedProvider, local: LocalProvider, session_id: str
) -> None:
    local.register_variable(session_id, "a", make_spec(int), 0)
    local.register_variable(session_id, "b", make_spec(int), 0)
    assert wait_until(lambda: cached.get_variables(session_id, ["a", "b"])["b"].value == 0)
    done = threading.Event()

    def write() -> None:  # another client: a then b, so any one revision has a - b in {0, 1}
        for step in range(1, 301):
            local.set_variable(session_id, "a", step)
            local.set_variable(session_id, "b", step)
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    reads = 0
    while not done.is_set() or reads == 0:
        records = cached.get_variables(session_id, ["a", "b"])
        a, b = records["a"], records["b"]
        assert a.value - b.value in (0, 1), (a, b)
        reads += 1
    writer.join(timeout=30)
    assert wait_until(
        lambda: (
            [r.value for r in cached.get_variables(session_id, ["a", "b"]).values()] == [300, 300]
        )
    )
    # once the stream has applied the last revision, reads come from the cache (same object)
    assert wait_until(
        lambda: (
            cached.get_variables(session_id, ["a", "b"])["a"]
            is cached.get_variables(session_id, ["a", "b"])["a"]
        )
    )
    records = cached.get_variables(session_id, ["a", "b"])
    assert records == local.get_variables(session_id, ["a", "b"])


def test_others_writes_arrive_within_the_watch_delivery_time(
    cached: CachedProvider, local: LocalProvider, session_id: str
) -> None:
    cached.get_variable(session_id, "t")
    local.set_variable(session_id, "t", 1.9)
    assert wait_until(lambda: cached.get_variable(session_id, "t").value == 1.9)
    local.register_variable(session_id, "born", FLOAT, 0.3)
    assert wait_until(lambda: _value_or_none(cached, session_id, "born") == 0.3)
    local.delete_variable(session_id, "born")
    assert wait_until(lambda: _value_or_none(cached, session_id, "born") is None)
    local.register_variable(session_id, "born", make_spec(int), 7)  # reborn with another type
    assert wait_until(lambda: _value_or_none(cached, session_id, "born") == 7)


def _value_or_none(cached: CachedProvider, session_id: str, name: str) -> object:
    try:
        return cached.get_variable(session_id, name).value
    except errors.VariableNotFoundError:
        return None


def test_a_session_closed_elsewhere_is_not_served_stale(
    cached: CachedProvider, local: LocalProvider, session_id: str
) -> None:
    local.close_session(session_id)
    assert wait_until(lambda: not cached.is_live(session_id))
    with pytest.raises(errors.SessionClosedError):
        cached.get_variable(session_id, "t")


def test_reconnects_after_a_server_restart_and_resumes_without_loss(
    local: LocalProvider,
) -> None:
    session_id = local.create_session()
    for name in ("a", "b", "c"):
        local.register_variable(session_id, name, FLOAT, 0.0)
    server = StoreServer.start(local, "127.0.0.1:0")
    port_address = server.address.removeprefix("grpc://")
    cached = CachedProvider(SessionStoreProvider(server.address), max_backoff=0.2)
    try:
        cached.follow(session_id)
        local.set_variable(session_id, "a", 0.1)
        assert wait_until(lambda: cached.get_variable(session_id, "a").value == 0.1)
        server.stop(grace=0.2)
        assert wait_until(lambda: not cached.is_live(session_id))
        with pytest.raises(errors.StoreUnavailableError):  # never a stale value meanwhile
            cached.get_variable(session_id, "a")
        for step in range(50):  # written while the store is down
            local.set_variable(session_id, "abc"[step % 3], step / 100)
        local.delete_variable(session_id, "c")
        local.register_variable(session_id, "d", FLOAT, 1.0)
        with served(local, port_address):  # the same store back on the same port
            assert wait_until(lambda: cached.is_live(session_id))
            head = local.get_session(session_id).revision
            assert wait_until(lambda: cached.revision(session_id) == head)
            for name in ("a", "b", "d"):
                assert cached.get_variable(session_id, name) == local.get_variable(
                    session_id, name
                )
            with pytest.raises(errors.VariableNotFoundError):
                cached.get_variable(session_id, "c")
            local.set_variable(session_id, "a", 1.25)  # and it keeps following
            assert wait_until(lambda: cached.get_variable(session_id, "a").value == 1.25)
    finally:
        cached.close()


def test_a_store_that_restarts_empty_is_not_served_stale(local: LocalProvider) -> None:
    session_id = local.create_session()
    local.register_variable(session_id, "a", FLOAT, 0.5)
    server = StoreServer.start(local, "127.0.0.1:0")
    port_address = server.address.removeprefix("grpc://")
    cached = CachedProvider(SessionStoreProvider(server.address), max_backoff=0.2)
    try:
        cached.follow(session_id)
        assert cached.get_variable(session_id, "a").value == 0.5
        server.stop(grace=0.2)
        with served(LocalProvider(), port_address):  # state lost
            assert wait_until(lambda: cached.revision(session_id) is None)
            with pytest.raises(errors.SessionNotFoundError):
                cached.get_variable(session_id, "a")
    finally:
        cached.close()


def test_a_store_that_restarts_with_a_shorter_history_rebuilds_the_cache(
    local: LocalProvider,
) -> None:
    session_id = local.create_session("s")
    local.register_variable(session_id, "a", FLOAT, 0.5)
    local.set_variable(session_id, "a", 0.6)
    server = StoreServer.start(local, "127.0.0.1:0")
    port_address = server.address.removeprefix("grpc://")
    cached = CachedProvider(SessionStoreProvider(server.address), max_backoff=0.2)
    try:
        cached.follow(session_id)
        assert cached.get_variable(session_id, "a").value == 0.6
        server.stop(grace=0.2)
        fresh = LocalProvider()  # another store that happens to hold a session "s"
        fresh.create_session("s")
        fresh.register_variable("s", "a", FLOAT, 1.5)
        with served(fresh, port_address):
            assert wait_until(lambda: cached.is_live(session_id))
            assert wait_until(lambda: cached.revision(session_id) == 1)
            assert cached.get_variable(session_id, "a").value == 1.5
    finally:
        cached.close()


def test_a_store_watch_delivers_to_a_consumer_on_its_stream_thread(
    server: StoreServer, local: LocalProvider, session_id: str
) -> None:
    store = SessionStoreProvider(server.address)
    try:
        watch = store.watch_variables(session_id, include_initial=True)
        applied: list[tuple[str, int, str]] = []
        local.set_variable(session_id, "t", 1.1)
        assert watch.deliver_to(
            lambda u: applied.append((u.name, u.revision, threading.current_thread().name))
        )
        local.set_variable(session_id, "t", 1.2)
        head = local.get_session(session_id).revision
        assert wait_until(lambda: bool(applied) and applied[-1][1] == head)
        assert [name for name, _, _ in applied][:1] == ["t"]  # the initial record came first
        revisions = [revision for _, revision, _ in applied[1:]]
        assert revisions == sorted(set(revisions)) and revisions[-1] == head
        # after the hand-over, no update waits in a queue for another thread to wake up
        assert applied[-1][2] == f"dspex-watch-{session_id[:12]}"
        local.close_session(session_id)
        assert watch.poll(timeout=10) is None and watch.closed  # the end still comes through
    finally:
        store.close()


def test_a_local_watch_keeps_its_queue(local: LocalProvider, session_id: str) -> None:
    with local.watch_variables(session_id) as watch:
        assert not watch.deliver_to(lambda _update: None)
        local.set_variable(session_id, "t", 1.3)
        update = watch.poll(timeout=10)
        assert update is not None and update.record.value == 1.3


def test_wait_revision_returns_when_the_stream_applied_it(
    cached: CachedProvider, local: LocalProvider, session_id: str
) -> None:
    assert wait_until(lambda: cached.is_live(session_id))
    target = local.get_session(session_id).revision + 1
    assert not cached.wait_revision(session_id, target, 0.05)  # not written yet: times out
    woke = threading.Event()

    def wait() -> None:
        if cached.wait_revision(session_id, target, 30):
            woke.set()

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    local.set_variable(session_id, "t", 1.4)
    assert woke.wait(10)
    assert cached.get_variable(session_id, "t").value == 1.4  # the read sees it
    waiter.join(10)
    started = time.monotonic()
    assert not cached.wait_revision("no-such-session", 1, 5)  # not followed
    cached.close()
    assert not cached.wait_revision(session_id, target + 1, 5)  # closed
    assert time.monotonic() - started < 2  # both at once: reads go to the store instead


def test_catch_up_applies_carried_changes_while_the_stream_is_stalled(
    cached: CachedProvider, local: LocalProvider, server: StoreServer, session_id: str
) -> None:
    """Changes handed over by a caller (what a Remote worker gets with a call) are served at
    once, at one revision, and the stream's own copies of them change nothing later."""
    local.register_variable(session_id, "u", FLOAT, 0.2)
    assert wait_until(lambda: _caught_up(cached, local, session_id))
    after = local.get_session(session_id).revision
    with stalled_loop(server._loop, 2.0) as released:
        local.set_variable(session_id, "t", 1.1)
        local.set_variable(session_id, "u", 0.3)
        local.delete_variable(session_id, "u")
        revision = local.get_session(session_id).revision
        changes = local.changes(session_id, after)
        assert [change.revision for change in changes] == list(range(after + 1, revision + 1))
        assert cached.catch_up(session_id, after, changes, revision)
        assert cached.wait_revision(session_id, revision, 0)
        assert cached.get_variable(session_id, "t").value == 1.1  # the store cannot answer
        assert cached.get_variables(session_id, ["t"])["t"].value == 1.1
        assert not released
    with pytest.raises(errors.VariableNotFoundError):
        cached.get_variable(session_id, "u")
    local.set_variable(session_id, "t", 1.2)  # the stream rules again after its replays
    assert wait_until(lambda: cached.get_variable(session_id, "t").value == 1.2)
    assert cached.revision(session_id) == revision + 1


def test_catch_up_refuses_changes_that_start_past_the_stream(
    cached: CachedProvider, local: LocalProvider, server: StoreServer, session_id: str
) -> None:
    """Changes that do not reach back to what the stream applied would leave a gap: refused,
    nothing applied, and the cache still waits for the stream."""
    assert wait_until(lambda: _caught_up(cached, local, session_id))
    with stalled_loop(server._loop, 1.0):
        local.set_variable(session_id, "t", 1.1)
        after = local.get_session(session_id).revision  # the stream has not applied this one
        local.set_variable(session_id, "t", 1.2)
        revision = local.get_session(session_id).revision
        assert not cached.catch_up(session_id, after, local.changes(session_id, after), revision)
        assert not cached.wait_revision(session_id, after, 0)
        assert not cached.catch_up("no-such-session", 0, [], 1)
    assert cached.wait_revision(session_id, revision, 10)
    assert cached.get_variable(session_id, "t").value == 1.2


def _caught_up(cached: CachedProvider, local: LocalProvider, session_id: str) -> bool:
    return cached.revision(session_id) == local.get_session(session_id).revision
