"""A provider that may block (SQLite flushing every write) runs in worker threads: identity,
locks and access control still reach it, and a waiting lock does not stall the server."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.engines import EngineMaker
from support.hardening import FLOAT, TOKENS, WAIT, served, standard_auth
from support.redis_server import RedisServer
from support.serve_process import ServeProcess

from dspex import errors
from dspex.state import LocalProvider, SessionContext
from dspex.state.engines import SQLiteEngine
from dspex.state.server.servicer import may_block
from dspex.state.store import AccessPolicy, SessionStoreProvider, StoreServer


@pytest.fixture(name="durable")
def _durable(tmp_path: Path) -> Iterator[LocalProvider]:
    engine = SQLiteEngine(tmp_path / "data", fsync=True)
    provider = LocalProvider(engine)
    yield provider
    provider.close()
    engine.close()


@pytest.fixture(name="server")
def _server(durable: LocalProvider) -> Iterator[StoreServer]:
    with served(durable, auth=AccessPolicy.from_dict(standard_auth())) as server:
        yield server


def test_only_in_memory_providers_run_on_the_event_loop(durable: LocalProvider) -> None:
    assert may_block(durable)
    memory = LocalProvider()
    try:
        assert not may_block(memory)
    finally:
        memory.close()


def test_offloaded_calls_keep_the_caller_identity_and_lock_owner(
    server: StoreServer, durable: LocalProvider
) -> None:
    owner = SessionStoreProvider(server.address, token=TOKENS["owner"], timeout=WAIT)
    waiter = SessionStoreProvider(server.address, token=TOKENS["owner"], timeout=WAIT)
    worker = SessionStoreProvider(server.address, token=TOKENS["worker"], timeout=WAIT)
    outcome: list[Any] = []
    try:
        sid = owner.create_session()
        assert durable.get_session(sid).owner == "owner"  # the principal reached the provider
        owner.register_variable(sid, "t", FLOAT, 0.5)
        context = SessionContext(owner, sid)
        with context.optimizing("t", optimizer_id="grid"):
            assert context.set("t", 0.7).writer.startswith("owner@")  # lock owner reached it

            def wait_for_lock() -> None:
                try:
                    outcome.append(
                        waiter.acquire_lock(
                            sid, "t", owner="w", optimizer_id="next", policy="wait"
                        )
                    )
                except errors.DspexError as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=wait_for_lock)
            thread.start()
            for _ in range(3):  # served while the acquire waits
                assert worker.get_variable(sid, "t").value == 0.7
            with pytest.raises(errors.PermissionDeniedError):
                worker.set_variable(sid, "t", 0.1)
        thread.join(WAIT)
        assert outcome and not isinstance(outcome[0], Exception), outcome
        assert outcome[0].lock["optimizer_id"] == "next"
    finally:
        for client in (owner, waiter, worker):
            client.close()


@pytest.mark.parametrize(
    ("engine_kind", "fsync", "blocks"),
    [
        ("memory", False, False),
        ("sqlite", False, False),
        ("sqlite", True, True),
        ("redis", False, True),
    ],
)
def test_each_engine_says_whether_its_calls_may_block(
    engine_kind: str, fsync: bool, blocks: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The server asks the provider, which asks its engine: no engine type checks."""
    url = request.getfixturevalue("redis_server").url if engine_kind == "redis" else None
    engines = EngineMaker(engine_kind, tmp_path, url)
    try:
        options = {"fsync": True} if fsync else {}
        provider = LocalProvider(engines.new(**options))
        try:
            assert provider.engine.blocks is blocks
            assert may_block(provider) is blocks
        finally:
            provider.close()
    finally:
        engines.close_all()


def test_a_provider_that_does_not_say_is_assumed_to_block() -> None:
    client = SessionStoreProvider("127.0.0.1:1")  # connects on its first call: none here
    try:
        assert may_block(client)
    finally:
        client.close()


@pytest.mark.redis
@pytest.mark.timeout(120)
def test_a_set_waiting_on_a_stopped_redis_does_not_stall_the_server(tmp_path: Path) -> None:
    """With access control on, a set checks the session (a Redis read) before it writes: both
    must run in a worker thread, so while Redis is stopped (SIGSTOP: connected, silent) the
    server still answers other calls."""
    token_file = tmp_path / "token"
    token_file.write_text("offload-token")
    with (
        RedisServer(tmp_path / "redis") as redis_server,
        ServeProcess("--redis", redis_server.url, "--token-file", str(token_file)) as server,
    ):
        client = SessionStoreProvider(server.address, token="offload-token", timeout=30.0)
        pinger = SessionStoreProvider(server.address, token="offload-token", timeout=2.0)
        try:
            sid = client.create_session()
            client.register_variable(sid, "x", FLOAT, 0.0)
            assert redis_server.process is not None
            redis_server.process.send_signal(signal.SIGSTOP)
            try:
                setter = threading.Thread(
                    target=_quietly, args=(client.set_variable, sid, "x", 1.0), daemon=True
                )
                setter.start()
                time.sleep(0.5)  # the set is in the server, waiting on Redis
                assert pinger.ping("still here") == "still here"
            finally:
                redis_server.process.send_signal(signal.SIGCONT)
            setter.join(WAIT)
            assert not setter.is_alive()
        finally:
            pinger.close()
            client.close()


def _quietly(call: Any, *args: Any) -> None:
    """``call(*args)``; a store error (Redis was stopped) is expected and ignored."""
    with contextlib.suppress(errors.DspexError):
        call(*args)
