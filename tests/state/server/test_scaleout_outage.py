"""Redis that is unreachable, goes away mid-run or holds newer data, under real servers.

Clients get a clear ``StoreUnavailableError`` naming Redis (not a hang, not a half-applied
write); the servers keep running and recover by themselves when Redis is back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from support import wait_until
from support.redis_server import RedisServer, free_port
from support.scaleout import INT, WAIT, clients, redis_servers, take
from support.serve_process import run_dspex

from dspex import errors
from dspex.state import SessionContext
from dspex.state.store import SessionStoreProvider

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


def _set_when_back(client: SessionStoreProvider, sid: str, value: int) -> int:
    """Set once Redis answers again (each failure must be the clear Redis error)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return client.set_variable(sid, "t", value).version
        except errors.StoreUnavailableError as exc:
            assert "Redis" in str(exc), exc
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_redis_going_away_is_a_clear_error_and_the_servers_recover(tmp_path: Path) -> None:
    store = RedisServer(tmp_path / "redis", persistent=True).start()
    try:
        with (
            redis_servers(store.url, 2) as (server_a, server_b),
            clients(server_a, server_b) as (a, b),
        ):
            sid = a.create_session()
            a.register_variable(sid, "t", INT, 1)
            before = a.set_variable(sid, "t", 2)
            context = SessionContext.connect(server_b.address, sid)
            watch = b.watch_variables(sid, ["t"])
            store.kill()
            unreachable = r"Redis at .* is unreachable"
            with pytest.raises(errors.StoreUnavailableError, match=unreachable):
                a.set_variable(sid, "t", 3)
            with pytest.raises(errors.StoreUnavailableError, match=unreachable):
                b.get_variable(sid, "t")
            assert a.ping("a") == "a" and b.ping("b") == "b", "servers must answer without Redis"
            assert server_a.alive and server_b.alive
            store.start()  # same port, same append-only file
            assert _set_when_back(a, sid, 4) == before.version + 1  # 3 was never applied
            assert b.get_variable(sid, "t").value == 4
            [update] = take(watch, 1)  # the watch on B lived through the outage
            assert (update.revision, update.record.value) == (before.revision + 1, 4)
            assert wait_until(lambda: context.get("t") == 4)
            watch.cancel()
            context.provider.close()
    finally:
        store.kill()


def test_serve_with_an_unreachable_redis_exits_with_one_clear_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_dspex("serve", "--address", "127.0.0.1:0", "--redis", url)
    assert result.returncode == 1
    assert result.stdout == ""  # it never listened
    [line] = result.stderr.splitlines()
    assert line.startswith(f"dspex: error: cannot open the store: Redis at {url} is unreachable")
    assert "check that redis-server is running" in line


def test_serve_refuses_redis_data_of_a_newer_format_untouched(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    prefix = "newer"
    try:
        admin.set(f"{prefix}:format", "99")
        admin.hset(f"{prefix}:sessions", "s", "1")
        before = {key: admin.dump(key) for key in admin.scan_iter(f"{prefix}:*")}
        result = run_dspex(
            "serve", "--address", "127.0.0.1:0", "--redis", redis_server.url,
            "--redis-prefix", prefix,
        )  # fmt: skip
        assert result.returncode == 1 and result.stdout == ""
        [line] = result.stderr.splitlines()
        assert "format 99" in line and "upgrade dspex" in line, line
        assert {key: admin.dump(key) for key in admin.scan_iter(f"{prefix}:*")} == before
    finally:
        for key in admin.scan_iter(f"{prefix}:*"):
            admin.delete(key)
        admin.close()


def test_serve_rejects_data_and_redis_together(tmp_path: Path) -> None:
    result = run_dspex("serve", "--data", str(tmp_path / "d"), "--redis", "redis://x:1/0")
    assert result.returncode == 2
    assert "not allowed with argument --data" in result.stderr
    assert not (tmp_path / "d").exists()
