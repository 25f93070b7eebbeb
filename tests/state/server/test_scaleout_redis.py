"""Scale-out: several ``dspex serve --redis`` processes on one real redis-server share sessions.

Reads, writes and watches go through different servers; versions and revisions stay strictly
increasing with writers on every server at once (the Lua compare-and-set in Redis).
"""

from __future__ import annotations

from collections import Counter

import pytest
from support import wait_until
from support.redis_server import RedisServer
from support.scaleout import (
    INT,
    WAIT,
    child_incrementer,
    child_writer,
    clients,
    redis_servers,
    run_together,
    take,
)

from dspex import errors
from dspex.state import SessionContext
from dspex.state.store import SessionStoreProvider

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


def test_a_write_through_one_server_is_seen_by_readers_and_watchers_on_the_other(
    redis_server: RedisServer,
) -> None:
    with (
        redis_servers(redis_server.url, 2) as (server_a, server_b),
        clients(server_a, server_b) as (a, b),
    ):
        sid = a.create_session()
        a.register_variable(sid, "t", INT, 1)
        assert b.get_session(sid).variable_count == 1
        assert [s.session_id for s in b.list_sessions()] == [sid]
        assert b.get_variable(sid, "t").value == 1
        context = SessionContext.connect(server_b.address, sid)  # the cached worker view
        with b.watch_variables(sid, ["t"]) as watch_b, a.watch_variables(sid) as watch_a:
            written = a.set_variable(sid, "t", 2)
            [update] = take(watch_b, 1)
            assert (update.revision, update.record.value) == (written.revision, 2)
            assert b.get_variable(sid, "t") == written
            assert wait_until(lambda: context.get("t") == 2)
            from_b = context.set("t", 3)  # written through B, seen on A
            assert [u.record.value for u in take(watch_a, 2)] == [2, 3]
            assert a.get_variable(sid, "t") == from_b
        a.close_session(sid)  # closed through A: gone through B too
        with pytest.raises(errors.SessionError):
            b.get_variable(sid, "t")
        context.provider.close()


def test_a_watch_lost_with_its_server_resumes_on_another_without_gap(
    redis_server: RedisServer,
) -> None:
    with (
        redis_servers(redis_server.url, 2) as (server_a, server_b),
        clients(server_a, server_b) as (a, b),
    ):
        sid = b.create_session()
        b.register_variable(sid, "n", INT, 0)
        watch = a.watch_variables(sid, ["n"])
        for value in range(1, 6):
            b.set_variable(sid, "n", value)
        received = take(watch, 5)
        server_a.kill()  # the watch's server dies; writes go on through B
        with pytest.raises(errors.StoreUnavailableError) as lost:
            take(watch, 1)
        assert lost.value.details["resume_from"] == received[-1].revision
        for value in range(6, 11):
            b.set_variable(sid, "n", value)
        with b.watch_variables(sid, after_revision=watch.last_revision) as resumed:
            received += take(resumed, 5)
        assert [u.record.value for u in received] == list(range(1, 11))
        revisions = [u.revision for u in received]
        assert revisions == list(range(revisions[0], revisions[0] + 10))


def test_writers_on_every_server_keep_versions_and_revisions_strictly_increasing(
    redis_server: RedisServer,
) -> None:
    count = 60
    with redis_servers(redis_server.url, 2, "--history-size", "1000") as servers:
        admin = SessionStoreProvider(servers[0].address, timeout=WAIT)
        try:
            sid = admin.create_session()
            for name in ("shared", "own0", "own1", "own2", "own3"):
                admin.register_variable(sid, name, INT, -1)
            start = admin.get_session(sid).revision
            clients = [SessionStoreProvider(s.address, timeout=WAIT) for s in servers]
            watchers = [c.watch_variables(sid, after_revision=start) for c in clients]
            jobs = [(servers[i % 2].address, sid, ["shared", f"own{i}"], count) for i in range(4)]
            acks = run_together(child_writer, jobs)
            _check_acks(admin, sid, acks, count)
            head = admin.get_session(sid).revision
            assert head == start + 4 * 2 * count
            seen = [take(watch, head - start) for watch in watchers]
            for updates in seen:  # every server's watcher: every change once, in order
                assert [u.revision for u in updates] == list(range(start + 1, head + 1))
            assert [(u.name, u.record.version) for u in seen[0]] == [
                (u.name, u.record.version) for u in seen[1]
            ]
            for client in clients:
                client.close()
        finally:
            admin.close()


def _check_acks(
    client: SessionStoreProvider, sid: str, acks: list[list[tuple[str, int, int, int]]], count: int
) -> None:
    revisions = Counter(rev for acked in acks for *_, rev in acked)
    assert all(n == 1 for n in revisions.values()), "a revision was given to two writes"
    for acked in acks:  # each writer's own view is strictly increasing
        assert [rev for *_, rev in acked] == sorted({rev for *_, rev in acked})
        shared = [version for name, _, version, _ in acked if name == "shared"]
        assert shared == sorted(set(shared))
    shared_versions = Counter(v for acked in acks for name, _, v, _ in acked if name == "shared")
    assert all(n == 1 for n in shared_versions.values()), "a version was given to two writes"
    history = client.get_history(sid, "shared")
    assert [r.version for r in history] == list(range(1, 4 * count + 2))
    assert [r.revision for r in history] == sorted({r.revision for r in history})
    by_version = {r.version: r for r in history}
    for acked in acks:
        for name, value, version, revision in acked:
            if name == "shared":
                assert (by_version[version].value, by_version[version].revision) == (
                    value, revision,
                )  # fmt: skip


def test_compare_and_set_across_servers_loses_no_increment(redis_server: RedisServer) -> None:
    increments = 40
    with redis_servers(redis_server.url, 2) as servers:
        admin = SessionStoreProvider(servers[0].address, timeout=WAIT)
        try:
            sid = admin.create_session()
            admin.register_variable(sid, "counter", INT, 0)
            jobs = [(servers[i % 2].address, sid, "counter", increments) for i in range(4)]
            conflicts = run_together(child_incrementer, jobs)
            final = admin.get_variable(sid, "counter")
            assert final.value == 4 * increments, f"lost increments ({conflicts} conflicts)"
            assert final.version == 4 * increments + 1
        finally:
            admin.close()
