"""Session expiry and limits end to end: through the real server and ``dspex serve`` flags."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from support.hardening import FLOAT, WAIT, child_create_ttl_session, spawned
from support.serve_process import ServeProcess

import dspex
from dspex import errors
from dspex._model import make_spec
from dspex.state import LocalProvider, VariableWatch
from dspex.state.store import SessionStoreProvider, StoreServer

TTL = 1.5


@pytest.fixture(name="local")
def _local() -> Iterator[LocalProvider]:
    """The folder's ``local`` (tests/state/conftest.py), sweeping often so TTLs end quickly."""
    provider = LocalProvider(sweep_interval=0.05)
    yield provider
    provider.close()


def _ends_expired(watch: VariableWatch, timeout: float = WAIT * 2) -> errors.DspexError:
    """Drain ``watch`` until it ends; return the error it ended with."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            watch.poll(timeout=0.2)
            if watch.closed:
                raise AssertionError("the watch ended normally, not with an expiry")
    except errors.DspexError as exc:
        return exc
    raise AssertionError(f"the watch did not end within {timeout}s")


def test_a_silent_session_expires_and_a_heartbeating_one_survives(
    server: StoreServer, local: LocalProvider
) -> None:
    silent = SessionStoreProvider(server.address, timeout=WAIT)
    observer = SessionStoreProvider(server.address, timeout=WAIT)
    try:
        gone = silent.create_session(ttl=TTL)  # a plain client: it never heartbeats
        silent.register_variable(gone, "t", FLOAT, 0.5)
        watch = observer.watch_variables(gone)
        with dspex.Session(store=server.address, ttl=TTL) as alive:
            alive.register("t", float, 0.5)
            ended = _ends_expired(watch)
            assert isinstance(ended, errors.SessionExpiredError)
            assert "expired" in str(ended) and "heartbeat" in str(ended)
            with pytest.raises(errors.SessionExpiredError):
                observer.get_variable(gone, "t")
            assert gone not in [info.session_id for info in local.list_sessions()]
            time.sleep(TTL * 3)  # well past its TTL: only its heartbeats keep it
            assert alive.get("t") == 0.5
            assert local.get_session(alive.session_id).ttl == TTL
    finally:
        silent.close()
        observer.close()


def test_a_killed_client_lets_its_session_expire(server: StoreServer) -> None:
    observer = SessionStoreProvider(server.address, timeout=WAIT)
    try:
        with spawned(child_create_ttl_session, server.address, TTL) as (process, conn):
            assert conn.poll(60)
            session_id = conn.recv()
            watch = observer.watch_variables(session_id)
            time.sleep(TTL * 2)  # its heartbeats keep it alive while the process lives
            assert observer.get_variable(session_id, "t").value == 0.5
            process.kill()
            assert isinstance(_ends_expired(watch), errors.SessionExpiredError)
    finally:
        observer.close()


def test_dspex_serve_session_ttl_and_automatic_heartbeats() -> None:
    with ServeProcess("--session-ttl", str(TTL)) as store:
        plain = SessionStoreProvider(store.address, timeout=WAIT)
        try:
            silent = plain.create_session()
            assert plain.get_session(silent).ttl == TTL  # the server's default applies
            with dspex.Session(store=store.address) as session:  # no ttl given: it still beats
                watch = plain.watch_variables(silent)
                assert isinstance(_ends_expired(watch), errors.SessionExpiredError)
                time.sleep(TTL * 2)
                assert plain.get_session(session.session_id).ttl == TTL
        finally:
            plain.close()


@pytest.fixture(name="limited", scope="module")
def _limited() -> Iterator[ServeProcess]:
    flags = (
        "--max-sessions", "3", "--max-variables", "2", "--max-value-bytes", "100",
        "--history-size", "2", "--max-watchers", "1", "--max-request-bytes", "65536",
    )  # fmt: skip
    with ServeProcess(*flags) as store:
        yield store


@pytest.fixture(name="client")
def _client(limited: ServeProcess) -> Iterator[SessionStoreProvider]:
    client = SessionStoreProvider(limited.address, timeout=WAIT)
    yield client
    for info in client.list_sessions():
        client.close_session(info.session_id)
    client.close()


def test_serve_limits_sessions(client: SessionStoreProvider) -> None:
    for _ in range(3):
        client.create_session()
    with pytest.raises(errors.LimitExceededError, match=r"open sessions \(limit 3\)"):
        client.create_session()
    assert len(client.list_sessions()) == 3


def test_serve_limits_variables_values_and_history(client: SessionStoreProvider) -> None:
    sid = client.create_session()
    client.register_variable(sid, "t", FLOAT, 0.1)
    client.register_variable(sid, "text", make_spec(str), "short")
    with pytest.raises(errors.LimitExceededError, match=r"variables per session \(limit 2\)"):
        client.register_variable(sid, "third", FLOAT, 0.1)
    with pytest.raises(errors.LimitExceededError, match="100"):
        client.set_variable(sid, "text", "x" * 200)
    assert client.get_variable(sid, "text").value == "short"
    for value in (0.2, 0.3, 0.4):
        client.set_variable(sid, "t", value)
    assert [r.value for r in client.get_history(sid, "t")] == [0.3, 0.4]


def test_serve_limits_watchers(client: SessionStoreProvider) -> None:
    sid = client.create_session()
    client.register_variable(sid, "t", FLOAT, 0.1)
    with client.watch_variables(sid) as first:
        with pytest.raises(errors.LimitExceededError, match=r"watchers per session \(limit 1\)"):
            client.watch_variables(sid, include_initial=True)  # a stream of its own
        client.set_variable(sid, "t", 0.2)
        update = first.poll(WAIT)
        assert update is not None and update.record.value == 0.2
    deadline = time.monotonic() + WAIT  # the slot frees once the server saw the cancel
    while True:
        try:
            client.watch_variables(sid).cancel()
            break
        except errors.LimitExceededError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_serve_limits_request_size(client: SessionStoreProvider) -> None:
    sid = client.create_session()
    client.register_variable(sid, "t", FLOAT, 0.1)
    with pytest.raises(errors.LimitExceededError, match="max-request-bytes"):
        client.register_variable(sid, "blob", make_spec(str), "y" * 70_000)
    assert [r.name for r in client.list_variables(sid)] == ["t"]
    assert client.set_variable(sid, "t", 0.9).value == 0.9  # the store still serves
