"""Connecting to a real ``dspex serve`` that is slow to answer (issue 12): a fresh client's
first call or watch waits for a store paused (SIGSTOP) for a moment instead of abandoning the
handshake after 100 ms, a call that outlives its timeout says so, and a restarted store is
still found again within about a second.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.faults import TEXT
from support.hardening import make_pki
from support.serve_process import ServeProcess

from dspex import errors
from dspex.state.store import SessionStoreProvider

PAUSE = 1.0
"""Seconds the server is stopped while a fresh client connects (10x the old connect timeout)."""


@contextmanager
def paused(server: ServeProcess, seconds: float) -> Iterator[None]:
    """SIGSTOP the server now and SIGCONT it after ``seconds`` (at the latest on leaving)."""
    assert server.process is not None
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    resume.start()
    try:
        yield
    finally:
        resume.cancel()
        os.kill(pid, signal.SIGCONT)


@pytest.fixture(name="serve", scope="module")
def serve_process() -> Iterator[tuple[ServeProcess, str]]:
    """One real server and a session with variable ``x`` in it."""
    with ServeProcess() as server:
        client = SessionStoreProvider(server.address, timeout=10.0)
        try:
            session_id = client.create_session()
            client.register_variable(session_id, "x", TEXT, "a")
        finally:
            client.close()
        yield server, session_id


FIRST_CALLS: dict[str, Callable[[SessionStoreProvider, str], object]] = {
    "call": lambda client, session_id: client.get_variable(session_id, "x").value,
    # a live watch: the shared stream, on the client's grpc.aio channel
    "live watch": lambda client, session_id: client.watch_variables(session_id).cancel(),
    # initial records: a dedicated stream on the sync channel, its first update read
    "dedicated watch": lambda client, session_id: (
        next(client.watch_variables(session_id, include_initial=True)).record.value
    ),
}


@pytest.mark.parametrize("first", FIRST_CALLS, ids=list(FIRST_CALLS))
def test_a_first_call_waits_for_a_store_paused_during_the_handshake(
    serve: tuple[ServeProcess, str], first: str
) -> None:
    server, session_id = serve
    client = SessionStoreProvider(server.address, timeout=10.0)
    try:
        with paused(server, PAUSE):
            started = time.monotonic()
            FIRST_CALLS[first](client, session_id)  # before the fix: UNAVAILABLE after 0.1 s
            waited = time.monotonic() - started
    finally:
        client.close()
    assert waited >= PAUSE * 0.9  # it did connect through the pause, not before it


def test_a_call_that_outlives_its_timeout_says_so(serve: tuple[ServeProcess, str]) -> None:
    server, session_id = serve
    client = SessionStoreProvider(server.address, timeout=0.5)
    try:
        with paused(server, 3.0), pytest.raises(errors.StoreUnavailableError) as late:
            client.get_variable(session_id, "x")
    finally:
        client.close()
    assert "did not answer within the call timeout" in str(late.value)
    assert "timeout=SECONDS" in str(late.value) and "unreachable" not in str(late.value)


def test_a_restarted_store_is_found_again_within_the_reconnect_backoff() -> None:
    server = ServeProcess().start()
    client = SessionStoreProvider(server.address, timeout=10.0)
    try:
        client.ping()
        server.kill()
        for _ in range(20):  # calls while it is down fail at once (refused), backing off
            with pytest.raises(errors.StoreUnavailableError, match="unreachable"):
                client.ping()
            time.sleep(0.05)
        server.start()
        started = time.monotonic()
        while True:
            try:
                client.ping()
                break
            except errors.StoreUnavailableError:
                time.sleep(0.01)
        # the backoff between attempts is at most 1 s (jitter 20%), plus a loaded machine
        assert time.monotonic() - started < 5.0
    finally:
        client.close()
        server.kill()


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_a_store_paused_past_the_connect_timeout_is_said_to_be_paused(
    tls: bool, tmp_path: Path
) -> None:
    """Past gRPC's 20 s connect timeout a stopped store is named as such, with TLS too (grpc
    then says "Handshake read failed", which was taken for a TLS misconfiguration)."""
    flags: tuple[str, ...] = ()
    root_cert = None
    if tls:
        pki = make_pki(tmp_path)
        flags, root_cert = (
            ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
            str(pki.ca),
        )
    server = ServeProcess(*flags)
    if tls:
        server.address = server.address.replace("grpc://", "grpcs://")
    with server:
        client = SessionStoreProvider(server.address, timeout=40.0, root_cert=root_cert)
        try:
            with paused(server, 30.0), pytest.raises(errors.StoreUnavailableError) as paused_error:
                client.ping()
        finally:
            client.close()
    assert "did not complete the gRPC handshake within 20 s" in str(paused_error.value)
    assert (
        "tls" not in paused_error.value.details
    )  # before, with TLS: "check that ... agree on TLS"
