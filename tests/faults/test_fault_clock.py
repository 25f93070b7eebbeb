"""Two servers on one Redis, one with its wall clock skewed by ±40 s (libfaketime): leases and
session TTLs are decided by Redis's clock, so the skewed server neither steals a lock another
server's client holds nor expires a session that is heartbeating (issue 12, item 4).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from support.faults import skewed_clock
from support.redis_server import RedisServer
from support.serve_process import ServeProcess

from dspex import errors
from dspex._model import make_spec
from dspex.state.store import SessionStoreProvider

FLOAT = make_spec(float)
SKEWS = [40, -40]


@contextmanager
def _pair(redis_url: str, skew: int) -> Iterator[tuple[str, str]]:
    """(address of the server whose clock is behind, address of the one ahead)."""
    flags = ("--redis", redis_url, "--redis-prefix", f"clock-{uuid.uuid4().hex[:8]}")
    normal = ServeProcess(*flags).start()
    try:
        skewed = ServeProcess(*flags, env=skewed_clock(skew)).start()
        try:
            behind, ahead = (normal, skewed) if skew > 0 else (skewed, normal)
            yield behind.address, ahead.address
        finally:
            skewed.kill()
    finally:
        normal.kill()


@pytest.mark.parametrize("skew", SKEWS)
def test_server_with_clock_ahead_cannot_take_a_held_lock(
    redis_server: RedisServer, skew: int
) -> None:
    with _pair(redis_server.url, skew) as (behind, ahead):
        holder = SessionStoreProvider(behind, timeout=10.0)
        rival = SessionStoreProvider(ahead, timeout=10.0)
        try:
            session_id = holder.create_session()
            holder.register_variable(session_id, "x", FLOAT, 0.0)
            holder.acquire_lock(session_id, "x", owner="holder-secret", optimizer_id="a", lease=15)
            with pytest.raises(errors.LockedError):
                rival.acquire_lock(session_id, "x", owner="rival-secret", optimizer_id="b")
            held = rival.get_variable(session_id, "x").lock
            assert held is not None and held["optimizer_id"] == "a"
            assert 10 < held["expires_at"] - time.time() < 20  # by Redis's clock, not the skew
        finally:
            holder.close()
            rival.close()


@pytest.mark.parametrize("skew", SKEWS)
def test_heartbeating_session_is_not_expired_by_a_skewed_server(
    redis_server: RedisServer, skew: int
) -> None:
    with _pair(redis_server.url, skew) as (behind, ahead):
        # Created through the server ahead (its sweeper starts and watches the TTL), kept
        # alive through the one behind.
        creator = SessionStoreProvider(ahead, timeout=10.0)
        keeper = SessionStoreProvider(behind, timeout=10.0)
        try:
            session_id = creator.create_session(ttl=20.0)
            for _ in range(6):  # 3 s: the sweepers (every 0.5 s) run several times
                keeper.heartbeat(session_id)
                time.sleep(0.5)
            assert creator.get_session(session_id).session_id == session_id
            assert keeper.get_session(session_id).session_id == session_id
        finally:
            creator.close()
            keeper.close()
