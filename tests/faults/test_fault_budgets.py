"""Big values through a real ``dspex serve`` (issue 12, item 6): history and the change log are
bounded in bytes as well as in versions, in memory, on disk and in Redis, so a stream of large
sets cannot grow a server, its data directory or its Redis without bound; byte budgets refuse
writes naming the limit, and servers sharing one Redis enforce one budget.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.faults import TEXT, record_figures
from support.redis_server import RedisServer
from support.serve_process import ServeProcess

from dspex import errors
from dspex.state.store import SessionStoreProvider

ENGINES = ["memory", "sqlite", "redis"]

VALUE = 256 * 1024
SETS = 40
BOUND = 1024 * 1024  # --history-bytes and --log-bytes: four values each
BUDGETS = ("--max-session-bytes", str(3 * VALUE), "--max-store-bytes", str(9 * VALUE // 2))


@pytest.fixture(name="store_flags")
def _store_flags(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, ...]]:
    """The flags that put a server's sessions on ``engine`` (Redis: the test session's
    redis-server under a fresh prefix, whose keys are deleted afterwards)."""
    if engine == "sqlite":
        yield ("--data", str(tmp_path / "data"))
    elif engine == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = f"budget{uuid.uuid4().hex[:8]}"
        yield ("--redis", server.url, "--redis-prefix", prefix)
        client = redis.Redis(port=server.port)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    else:
        yield ()


def _used_mib(engine: str, server: ServeProcess, request: pytest.FixtureRequest) -> float:
    """Memory the sessions take: the server's RSS, or Redis's used memory for ``--redis``."""
    if engine != "redis":
        assert server.process is not None
        return _rss_mib(server.process.pid)
    client = redis.Redis(port=request.getfixturevalue("redis_server").port)
    try:
        return int(client.info("memory")["used_memory"]) / 2**20
    finally:
        client.close()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("engine", ENGINES)
def test_history_and_log_are_bounded_in_bytes(
    tmp_path: Path, engine: str, store_flags: tuple[str, ...], request: pytest.FixtureRequest
) -> None:
    bounds = ("--history-bytes", str(BOUND), "--log-bytes", str(BOUND))
    with ServeProcess(*store_flags, *bounds) as server:
        client = SessionStoreProvider(server.address, timeout=30.0)
        try:
            session_id = client.create_session()
            client.register_variable(session_id, "blob", TEXT, "")
            before = _used_mib(engine, server, request)
            for i in range(SETS):
                client.set_variable(session_id, "blob", chr(ord("a") + i % 26) * VALUE)
            history = client.get_history(session_id, "blob")
            grown = _used_mib(engine, server, request) - before
        finally:
            client.close()
    assert 1 <= len(history) <= BOUND // VALUE, len(history)  # was all 40 (history_size 100)
    assert history[-1].value == chr(ord("a") + (SETS - 1) % 26) * VALUE
    sent = SETS * VALUE / 2**20
    assert grown < 6 * BOUND / 2**20 + 30, f"RSS grew {grown:.0f} MiB for {sent:.0f} MiB sent"
    if engine == "redis":  # Redis's memory is measured exactly: history, log, feed, current
        assert grown < sent / 2, f"Redis grew {grown:.1f} MiB for {sent:.0f} MiB sent"
    if engine == "sqlite":
        size = sum(f.stat().st_size for f in (tmp_path / "data").iterdir()) / 2**20
        assert size < sent, f"the data dir holds {size:.1f} MiB of {sent:.0f} MiB sent"
    record_figures(
        f"history_bytes_{engine}", sets=SETS, value_kib=VALUE // 1024,
        versions_kept=len(history), rss_growth_mib=round(grown, 1),
    )  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_session_and_store_byte_budgets_refuse_writes_naming_the_limit(
    store_flags: tuple[str, ...],
) -> None:
    with ServeProcess(*store_flags, *BUDGETS) as server:
        client = SessionStoreProvider(server.address, timeout=30.0)
        try:
            first, second = client.create_session(), client.create_session()
            client.register_variable(first, "a", TEXT, "x" * VALUE)
            client.register_variable(first, "b", TEXT, "y" * VALUE)
            with pytest.raises(errors.LimitExceededError, match="bytes kept in session") as hit:
                client.update_variables(first, {"a": "z" * VALUE, "b": "w" * VALUE}, atomic=True)
            assert f"limit {3 * VALUE}" in str(hit.value)
            assert client.get_variable(first, "a").value == "x" * VALUE  # nothing applied
            client.register_variable(second, "c", TEXT, "v" * VALUE)
            client.register_variable(second, "d", TEXT, "u" * VALUE)
            with pytest.raises(errors.LimitExceededError, match="bytes kept in the whole store"):
                client.set_variable(second, "c", "t" * VALUE)
            client.delete_variable(first, "b")  # freeing space makes room again
            assert client.set_variable(second, "c", "t" * VALUE).version == 2
        finally:
            client.close()


@pytest.mark.parametrize("engine", ["redis"])
def test_servers_sharing_one_redis_enforce_one_budget(store_flags: tuple[str, ...]) -> None:
    """Two servers on one Redis: what one server's sessions keep counts against the store
    budget on the other, and a write refused there is applied on neither."""
    with (
        ServeProcess(*store_flags, *BUDGETS) as first,
        ServeProcess(*store_flags, *BUDGETS) as second,
    ):
        one = SessionStoreProvider(first.address, timeout=30.0)
        two = SessionStoreProvider(second.address, timeout=30.0)
        try:
            a, b = one.create_session(), two.create_session()
            one.register_variable(a, "x", TEXT, "x" * VALUE)
            one.set_variable(a, "x", "y" * VALUE)  # two versions kept: 2 values in the store
            two.register_variable(b, "u", TEXT, "u" * VALUE)
            two.register_variable(b, "v", TEXT, "v" * VALUE)  # 4 values kept; the budget: 4.5
            revision = two.get_variable(b, "v").revision
            with pytest.raises(errors.LimitExceededError, match="whole store") as hit:
                two.set_variable(b, "v", "w" * VALUE)  # within b's session budget
            assert f"limit {9 * VALUE // 2}" in str(hit.value)
            for client in (one, two):  # refused on both: nothing applied anywhere
                record = client.get_variable(b, "v")
                assert (record.value, record.revision) == ("v" * VALUE, revision)
                assert len(client.get_history(b, "v")) == 1
            with pytest.raises(errors.LimitExceededError, match="whole store"):
                one.set_variable(a, "x", "z" * VALUE)  # the other server sees the same total
            two.close_session(a)  # freed through the other server
            assert one.set_variable(b, "v", "w" * VALUE).version == 2
        finally:
            one.close()
            two.close()
