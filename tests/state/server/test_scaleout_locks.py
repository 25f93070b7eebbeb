"""Optimization locks and their leases hold across ``dspex serve --redis`` servers.

The lock lives in the variable's record in Redis, so a lock taken through one server is
enforced by every other; a lease that runs out frees the variable everywhere, and a holder that
disconnects has its locks released by the server it held them through.
"""

from __future__ import annotations

import time

import pytest
from support import wait_until
from support.redis_server import RedisServer
from support.scaleout import INT, WAIT, clients, redis_servers, take

from dspex import errors
from dspex.state import current_lock_owner
from dspex.state.store import SessionStoreProvider

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

LEASE = 1.5


def test_a_lock_taken_through_one_server_is_enforced_by_another(
    redis_server: RedisServer,
) -> None:
    with (
        redis_servers(redis_server.url, 2) as (server_a, server_b),
        clients(server_a, server_b) as (a, b),
    ):
        sid = a.create_session()
        a.register_variable(sid, "t", INT, 0)
        with b.watch_variables(sid, ["t"]) as watch:
            locked = a.acquire_lock(sid, "t", owner="secret-a", optimizer_id="opt-a")
            [update] = take(watch, 1)  # the lock shows on the other server's watchers
            assert update.kind == "lock" and update.record.lock is not None
            assert update.revision == locked.revision
        with pytest.raises(errors.LockedError):
            b.set_variable(sid, "t", 1)  # no owner token
        token = current_lock_owner.set("secret-b")
        try:
            with pytest.raises(errors.LockedError):
                b.set_variable(sid, "t", 1)  # another optimizer's token
            with pytest.raises(errors.LockedError):
                b.acquire_lock(sid, "t", owner="secret-b", optimizer_id="opt-b")
            with pytest.raises(errors.LockedError):
                b.release_lock(sid, "t", owner="secret-b")  # only the holder releases
        finally:
            current_lock_owner.reset(token)
        token = current_lock_owner.set("secret-a")
        try:
            assert b.set_variable(sid, "t", 2).value == 2  # the holder writes through B
        finally:
            current_lock_owner.reset(token)
        b.release_lock(sid, "t", owner="secret-a")  # released through the other server
        assert a.set_variable(sid, "t", 3).version == 3


def test_a_lease_that_runs_out_frees_the_variable_on_every_server(
    redis_server: RedisServer,
) -> None:
    with (
        redis_servers(redis_server.url, 2) as (server_a, server_b),
        clients(server_a, server_b) as (a, b),
    ):
        sid = b.create_session()
        b.register_variable(sid, "t", INT, 0)
        a.acquire_lock(sid, "t", owner="secret-a", optimizer_id="opt-a", lease=LEASE)
        server_a.kill()  # its holder can neither renew nor release the lock now
        with pytest.raises(errors.LockedError):
            b.set_variable(sid, "t", 1)
        time.sleep(LEASE)
        assert wait_until(lambda: _writable(b, sid)), "the lease never ran out"
        taken = b.acquire_lock(sid, "t", owner="secret-b", optimizer_id="opt-b")
        assert taken.lock is not None and taken.lock["optimizer_id"] == "opt-b"


def test_a_holder_that_disconnects_has_its_locks_released(redis_server: RedisServer) -> None:
    with redis_servers(redis_server.url, 2) as (server_a, server_b):
        a = SessionStoreProvider(server_a.address, timeout=WAIT)
        b = SessionStoreProvider(server_b.address, timeout=WAIT)
        try:
            sid = b.create_session()
            b.register_variable(sid, "t", INT, 0)
            a.acquire_lock(sid, "t", owner="secret-a", optimizer_id="opt-a", lease=600)
            with pytest.raises(errors.LockedError):
                b.set_variable(sid, "t", 1)
            a.close()  # long before the lease: server A releases it when the holder leaves
            assert wait_until(lambda: _writable(b, sid)), "the lock outlived its holder"
        finally:
            b.close()


def _writable(client: SessionStoreProvider, sid: str) -> bool:
    try:
        client.set_variable(sid, "t", 7)
    except errors.LockedError:
        return False
    return True
