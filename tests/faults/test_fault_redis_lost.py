"""A Redis under ``dspex serve --redis`` that loses its data while the server runs: flushed
(``FLUSHALL``: the connection stays up and the feed just goes quiet) or replaced by a fresh
server without persistence. A session Redis no longer holds must not go on being served: its
watches end, a read cache stops serving it (reads then say the session is gone), and a session
recreated under the same id starts over instead of being taken for the old one.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis
from support.faults import TEXT, WAIT, record_figures
from support.redis_server import RedisServer
from support.serve_process import ServeProcess

from dspex import errors
from dspex.state.store import CachedProvider, SessionStoreProvider

pytestmark = pytest.mark.timeout(120)


def _lose_data(redis_server: RedisServer, how: str) -> None:
    if how == "flushall":
        admin = redis.Redis(port=redis_server.port)
        admin.flushall()
        admin.close()
    else:  # the same port, an empty server
        redis_server.kill()
        redis_server.start()


@pytest.mark.parametrize("how", ["flushall", "fresh-server"])
def test_sessions_redis_lost_are_not_served(tmp_path: Path, how: str) -> None:
    with RedisServer(tmp_path) as redis_server:
        prefix = f"lost-{uuid.uuid4().hex[:8]}"
        with ServeProcess("--redis", redis_server.url, "--redis-prefix", prefix) as server:
            writer = SessionStoreProvider(server.address, timeout=5.0)
            cache = CachedProvider(SessionStoreProvider(server.address, timeout=5.0))
            try:
                _lost(redis_server, how, writer, cache)
            finally:
                writer.close()
                cache.close()


def _lost(
    redis_server: RedisServer, how: str, writer: SessionStoreProvider, cache: CachedProvider
) -> None:
    writer.create_session("s")
    writer.register_variable("s", "x", TEXT, "v1")
    last = [writer.set_variable("s", "x", f"v{i}") for i in range(2, 11)][-1].revision
    watch = writer.watch_variables("s", after_revision=last)
    cache.follow("s")
    assert cache.get_variable("s", "x").value == "v10"
    _lose_data(redis_server, how)
    lost = time.monotonic()
    while True:  # before: the cache served v10 of a session Redis no longer held, forever
        try:
            served = cache.get_variable("s", "x").value
        except errors.SessionNotFoundError:
            break
        except errors.StoreUnavailableError:
            served = None  # the server is still reconnecting to the fresh Redis
        assert time.monotonic() - lost < WAIT, f"the cache still serves {served!r}"
        time.sleep(0.05)
    noticed = time.monotonic() - lost
    assert watch.poll(timeout=WAIT) is None and watch.closed  # the watch ended with its session
    writer.create_session("s")  # the same id again: a new session, not the old one
    again = writer.register_variable("s", "x", TEXT, "new")
    assert again.revision == 1
    deadline = time.monotonic() + WAIT
    while (seen := cache.get_variable("s", "x").value) != "new":
        assert time.monotonic() < deadline, f"the cache serves {seen!r}, not the new session"
        time.sleep(0.05)
    record_figures(f"redis_data_lost_{how}", revisions_lost=last, noticed_s=round(noticed, 2))
