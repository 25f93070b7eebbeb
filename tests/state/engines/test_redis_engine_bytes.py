"""RedisEngine byte bounds as several servers see them: one budget for every server on the
Redis, large commits kept out of the feed, and a store of the older format upgraded in place.

Two ``RedisEngine`` objects on one real redis-server and prefix stand for two servers.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from support.engines import Collector, EngineMaker, change, register
from support.redis_server import RedisServer

from dspex import errors
from dspex._model import make_spec
from dspex.state.engines.redis import FEED_INLINE_BYTES, RedisEngine

TEXT = make_spec(str)
pytestmark = pytest.mark.redis


@pytest.fixture(name="engine_kind")
def _redis_only() -> str:
    return "redis"  # the conftest's engines fixture then opens Redis engines


def _value(engine: RedisEngine, sid: str, name: str) -> Any:
    record = engine.get(sid, name)
    assert record is not None
    return record


def test_two_servers_share_one_store_budget_and_apply_nothing_refused(
    engines: EngineMaker,
) -> None:
    first = engines.new(max_store_bytes=1000)
    assert isinstance(first, RedisEngine)
    second = engines.second(first)
    heard = Collector()
    second.listen(heard)
    first.create_session("a", ttl=None, owner="o")
    second.create_session("b", ttl=None, owner="o")
    first.commit("a", [register("x", "x" * 600, TEXT)])
    second.commit("b", [register("y", "y" * 300, TEXT)])
    heard.wait_for(lambda: heard.revisions("a") == [1] and heard.revisions("b") == [1])
    old = _value(second, "b", "y")
    with pytest.raises(errors.LimitExceededError, match="bytes kept in the whole store") as hit:
        second.commit("b", [change(old, "z" * 200)])  # 600 + 300 + 200 kept
    assert hit.value.details["limit"] == 1000
    assert _value(first, "b", "y") == old  # nothing applied, for either server
    assert [r.value for r in first.history("b", "y")] == ["y" * 300]
    assert [u.revision for u in first.changes("b", 0)] == [1]
    x = _value(second, "a", "x")
    second.commit("a", [change(x, "", kind="delete")])  # freed through the other server
    assert second.commit("b", [change(old, "z" * 200)])[0].record.version == 2
    assert first.drop_session("b")
    third = engines.second(first)
    third.create_session("c", ttl=None, owner="o")  # the store holds nothing now
    assert third.commit("c", [register("w", "w" * 1000, TEXT)])[0].revision == 1


def test_large_commits_reach_other_servers_from_the_log_as_one_batch(
    engines: EngineMaker, redis_server: RedisServer
) -> None:
    first = engines.new()
    assert isinstance(first, RedisEngine)
    second = engines.second(first)
    heard = Collector()
    second.listen(heard)
    first.create_session("s", ttl=None, owner="o")
    big = "b" * FEED_INLINE_BYTES
    first.commit("s", [register("small", "tiny", TEXT)])
    first.commit("s", [register("p", big, TEXT), register("q", big, TEXT)])
    first.commit("s", [change(_value(first, "s", "small"), "still tiny")])
    heard.wait_for(lambda: heard.revisions("s") == [1, 2, 3, 4])
    batches = [[u.batch for u in updates] for sid, updates, _ in heard.calls if sid == "s"]
    assert batches[0] == [None] and batches[-1] == [None]
    marks = [mark for batch in batches for mark in batch if mark is not None]
    assert [(m.first, m.last) for m in marks] == [(2, 3), (2, 3)]
    assert [u.record.value for _, updates, _ in heard.calls for u in updates][1:3] == [big, big]
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    try:
        feed: list[tuple[str, dict[str, str]]] = client.xrange(first.feed_key)  # type: ignore[assignment]
    finally:
        client.close()
    commits = [fields for _, fields in feed if "e" not in fields]
    assert [sorted(fields) for fields in commits] == [["s", "u"], ["f", "r", "s"], ["s", "u"]]
    assert sum(len(value) for fields in commits for value in fields.values()) < 2000


def test_a_store_of_the_older_format_is_upgraded_in_place(
    engines: EngineMaker, redis_server: RedisServer
) -> None:
    old = engines.new(history_size=3, history_bytes=1200)
    assert isinstance(old, RedisEngine)
    old.create_session("s", ttl=None, owner="o")
    old.commit("s", [register("t", "a" * 500, TEXT)])
    old.commit("s", [change(_value(old, "s", "t"), "b" * 500)])
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    try:  # what format 1 kept: no sizes beside the entries, no byte totals
        base = old.base("s")
        client.delete(base + "z:t", base + "logz", base + "hbytes", old.bytes_key)
        client.hdel(base + "meta", "bytes", "log_bytes")
        client.set(f"{old.prefix}:format", "1")
        engine = engines.reopen(old)
        assert isinstance(engine, RedisEngine)
        assert client.get(f"{engine.prefix}:format") == "2"
        assert client.llen(base + "z:t") == 2 and client.llen(base + "logz") == 2
    finally:
        client.close()
    engine.commit("s", [change(_value(engine, "s", "t"), "c" * 700)])  # older ones count 0
    assert [r.value[0] for r in engine.history("s", "t")] == ["a", "b", "c"]
    engine.commit("s", [change(_value(engine, "s", "t"), "d" * 600)])  # 700 + 600 > 1200
    assert [r.value[0] for r in engine.history("s", "t")] == ["d"]
