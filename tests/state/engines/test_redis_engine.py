"""RedisEngine as several servers use it: shared sessions, CAS across engines, Redis outages.

Every test runs against a real redis-server on loopback; two ``RedisEngine`` objects on one
Redis and prefix stand for two ``dspex serve`` processes.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from support.engines import Collector, EngineMaker
from support.redis_server import RedisServer, free_port

from dspex import errors
from dspex._model import EMPTY, VariableRecord, freeze, make_spec
from dspex.state.engines import EngineConflict, UnknownSession, Write, open_engine
from dspex.state.engines.redis import FORMAT_VERSION, RedisEngine

INT = make_spec(int)
pytestmark = pytest.mark.redis


@pytest.fixture(name="engines")
def _engines(tmp_path: Path, redis_server: RedisServer) -> Any:
    maker = EngineMaker("redis", tmp_path, redis_server.url)
    yield maker
    maker.close_all()


def next_write(record: VariableRecord, **fields: Any) -> Write:
    value = fields.pop("value", record.value + 1)
    version = fields.pop("version", record.version + 1)
    kind = fields.pop("kind", "set")
    return Write(record.name, record.revision, kind, record.spec, value, version, "t", EMPTY,
                 **fields)  # fmt: skip


def increment(engine: RedisEngine, sid: str, name: str, times: int, failures: list[Any]) -> None:
    """Add 1 to ``name`` ``times`` times with compare-and-set, retrying on conflict."""
    try:
        for _ in range(times):
            while True:
                record = engine.get(sid, name)
                assert record is not None
                try:
                    engine.commit(sid, [next_write(record)])
                    break
                except EngineConflict:
                    continue
    except BaseException as exc:  # reported by the test
        failures.append(exc)


def run_threads(*targets: tuple[Any, ...]) -> None:
    threads = [threading.Thread(target=target, args=args) for target, *args in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
        assert not thread.is_alive()


def register(engine: RedisEngine, sid: str, *names: str) -> None:
    engine.commit(sid, [Write(n, None, "register", INT, 0, 1, "t", EMPTY) for n in names])


def test_two_servers_share_sessions_with_strictly_increasing_revisions(
    engines: EngineMaker,
) -> None:
    one = engines.new()
    two = engines.second(one)
    seen_one, seen_two = Collector(), Collector()
    one.listen(seen_one)
    two.listen(seen_two)
    one.create_session("s", ttl=None, owner="one")
    assert two.create_session("s", ttl=None, owner="two") is False
    register(two, "s", "n", "a", "b")
    assert one.get("s", "n") == two.get("s", "n")  # a write through one is read on the other

    failures: list[Any] = []
    run_threads(
        (increment, one, "s", "n", 30, failures),
        (increment, one, "s", "a", 30, failures),
        (increment, two, "s", "n", 30, failures),
        (increment, two, "s", "b", 30, failures),
    )
    assert not failures
    final = one.get("s", "n")
    assert final is not None and (final.value, final.version) == (60, 61)
    total = 3 + 120
    assert two.session("s").revision == total  # type: ignore[union-attr]
    for seen in (seen_one, seen_two):  # every server's listener sees every server's commits
        seen.wait_for(lambda seen=seen: len(seen.revisions("s")) >= total)  # type: ignore[misc]
        assert seen.revisions("s") == list(range(1, total + 1))
    values = [u.record.value for _, ups, _ in seen_two.calls for u in ups if u.name == "n"]
    assert values == list(range(61))

    one.drop_session("s")
    seen_two.wait_for(lambda: seen_two.closed("s") == 1)
    with pytest.raises(UnknownSession):
        two.get("s", "n")


def test_compare_and_set_holds_across_servers(engines: EngineMaker) -> None:
    """Two servers race to take the same lock from the same read: exactly one wins."""
    one = engines.new()
    two = engines.second(one)
    one.create_session("s", ttl=None, owner="")
    register(one, "s", "v")
    for round_ in range(20):
        record = one.get("s", "v")
        assert record is not None
        wins: list[str] = []

        def take(
            engine: RedisEngine,
            owner: str,
            record: VariableRecord = record,
            round_: int = round_,
            wins: list[str] = wins,
        ) -> None:
            lock = freeze({"owner": owner, "round": round_})
            write = next_write(record, kind="lock", value=record.value, version=record.version,
                               lock=lock)  # fmt: skip
            try:
                engine.commit("s", [write])
                wins.append(owner)
            except EngineConflict:
                pass

        run_threads((take, one, "one"), (take, two, "two"))
        assert len(wins) == 1
        held = two.get("s", "v")
        assert held is not None and held.lock == {"owner": wins[0], "round": round_}


def test_a_slow_listener_misses_nothing_when_the_feed_is_trimmed(engines: EngineMaker) -> None:
    """The feed keeps ~feed_size entries; a listener further behind fills from the log."""
    one = engines.new()
    writer = RedisEngine(one.url, prefix=one.prefix, feed_size=5)
    engines.opened.append(writer)
    one.create_session("s", ttl=None, owner="")
    register(one, "s", "n")
    release = threading.Event()
    seen = Collector()

    def slow(sid: str, updates: Any, closed: bool) -> None:
        release.wait(timeout=60)
        seen(sid, updates, closed)

    one.listen(slow)
    failures: list[Any] = []
    increment(writer, "s", "n", 600, failures)
    assert not failures
    assert one.client.xlen(one.feed_key) < 600  # the feed really was trimmed
    release.set()
    seen.wait_for(lambda: len(seen.revisions("s")) >= 600)
    assert seen.revisions("s") == list(range(2, 602))


def test_the_feed_reader_reconnects_without_gap_or_duplicate(engines: EngineMaker) -> None:
    one = engines.new()
    two = engines.second(one)
    seen = Collector()
    two.listen(seen)
    one.create_session("s", ttl=None, owner="")
    register(one, "s", "n")
    admin = redis.Redis.from_url(one.url, decode_responses=True)
    try:
        for _ in range(10):
            failures: list[Any] = []
            increment(one, "s", "n", 20, failures)
            assert not failures
            for client in admin.client_list():
                if client["cmd"] == "xread":  # the listener's blocked read
                    admin.client_kill_filter(_id=client["id"])
    finally:
        admin.close()
    seen.wait_for(lambda: len(seen.revisions("s")) >= 201)
    assert seen.revisions("s") == list(range(1, 202))


def test_redis_going_away_is_a_clear_error_then_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", persistent=True).start()
    try:
        one = RedisEngine(server.url, prefix="p")
        two = RedisEngine(server.url, prefix="p")
        seen = Collector()
        two.listen(seen)
        one.create_session("s", ttl=None, owner="")
        register(one, "s", "n")
        failures: list[Any] = []
        increment(one, "s", "n", 5, failures)
        seen.wait_for(lambda: len(seen.revisions("s")) == 6)

        server.kill()
        record = VariableRecord("n", INT, 5, 6, 6, 0.0)
        for call in (
            lambda: one.get("s", "n"),
            lambda: one.commit("s", [next_write(record)]),
            one.sessions,
            lambda: one.changes("s", 0),
            lambda: RedisEngine(server.url, prefix="p"),
        ):
            with pytest.raises(errors.StoreUnavailableError) as down:
                call()
            assert server.url in str(down.value) and "unreachable" in str(down.value)

        server.start()  # same port and data directory: the AOF brings the session back
        increment(one, "s", "n", 5, failures)
        assert not failures
        assert two.get("s", "n").value == 10  # type: ignore[union-attr]
        seen.wait_for(lambda: len(seen.revisions("s")) >= 11)
        assert seen.revisions("s") == list(range(1, 12))
        one.close()
        two.close()
    finally:
        server.kill()


def test_a_restart_that_lost_the_data_closes_the_sessions(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        one = RedisEngine(server.url)
        seen = Collector()
        one.listen(seen)
        one.create_session("s", ttl=None, owner="")
        register(one, "s", "n")
        seen.wait_for(lambda: seen.revisions("s") == [1])
        server.kill()
        server.start()  # no persistence: everything is gone
        seen.wait_for(lambda: seen.closed("s") == 1)
        assert one.session("s") is None
        one.create_session("t", ttl=None, owner="")
        register(one, "t", "m")
        seen.wait_for(lambda: seen.revisions("t") == [1])
        one.close()
    finally:
        server.kill()


def test_an_unreachable_redis_is_a_clear_error() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    for opener in (RedisEngine, open_engine):
        with pytest.raises(errors.StoreUnavailableError) as down:
            opener(url)
        message = str(down.value)
        assert f"127.0.0.1:{url.rsplit(':', 1)[1]}" in message and "hunter2" not in message
        assert isinstance(down.value, ConnectionError)
    with pytest.raises(errors.StoreUnavailableError, match="bad Redis URL"):
        RedisEngine("redis://127.0.0.1:notaport/0")


def test_data_from_a_newer_format_is_refused_untouched(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        admin.set(f"{prefix}:format", str(FORMAT_VERSION + 1))
        admin.hset(f"{prefix}:sessions", "s", f"{prefix}:{{s}}:")
        before = {key: admin.dump(key) for key in admin.scan_iter(match=f"{prefix}:*")}
        with pytest.raises(errors.StoreDataError, match="newer dspex"):
            RedisEngine(redis_server.url, prefix=prefix)
        after = {key: admin.dump(key) for key in admin.scan_iter(match=f"{prefix}:*")}
        assert after == before
    finally:
        keys = list(admin.scan_iter(match=f"{prefix}:*"))
        if keys:
            admin.delete(*keys)
        admin.close()


def test_a_full_redis_refuses_the_write_and_changes_nothing(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        engine = RedisEngine(server.url)
        engine.create_session("s", ttl=None, owner="")
        register(engine, "s", "n")
        admin = redis.Redis.from_url(server.url)
        admin.config_set("maxmemory", str(admin.info("memory")["used_memory"] // 2))
        record = engine.get("s", "n")
        assert record is not None
        with pytest.raises(errors.StoreDataError, match="out of memory") as full:
            engine.commit("s", [next_write(record)])
        assert "not applied" in str(full.value)
        assert engine.get("s", "n") == record and engine.changes("s", 1) == []
        admin.config_set("maxmemory", "0")
        engine.commit("s", [next_write(record)])
        assert engine.get("s", "n").value == 1  # type: ignore[union-attr]
        admin.close()
        engine.close()
