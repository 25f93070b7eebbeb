"""Slow readers on either side of the dashboard get every change or an explicit restart.

A page that reads too slowly is told to restart (the dashboard runs in this process,
``DashboardServer`` with real uvicorn, and the "page" is a raw socket with a tiny receive
buffer that stops reading); a store watch that lags resumes with no gap and no duplicate.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
from support.dashboard import DashboardProcess
from support.serve_process import ServeProcess

import dspex
import dspex.dashboard._app as dashboard_app
from dspex.dashboard import DashboardServer
from dspex.state import SessionContext
from dspex.state.store import SessionStoreProvider

pytestmark = pytest.mark.timeout(120)

SETS = 1500
"""Changes made while the page does not read: ~7 MB of events, beyond the ~4 MB that the
kernel buffers on loopback (tcp_wmem) and the transport's 64 kB."""


def read_until(sock: socket.socket, marker: bytes, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.5)
    while marker not in data and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data


def test_a_page_that_reads_too_slowly_is_told_to_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard_app, "_MAX_PENDING", 20)
    with ServeProcess() as store, dspex.Session(store=store.address) as session:
        session.register("prompt", str, "start")
        provider = SessionStoreProvider(store.address)
        server = DashboardServer.start(provider)
        try:
            url = urllib.parse.urlsplit(server.url)
            page = socket.socket()
            page.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            page.connect((url.hostname, url.port))
            path = f"/api/sessions/{session.session_id}/events"
            page.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
            assert b"retry: 2000" in read_until(page, b"retry: 2000", 10)
            for i in range(SETS):  # ~4.5 kB messages each: more than the socket buffers hold
                session.set("prompt", f"{i:04d}" + "x" * 3900)
            data = read_until(page, b"event: restart", 20)
            page.close()
            assert b"event: restart" in data
            assert data.count(b"event: variable") < SETS  # it did not get everything queued
        finally:
            server.stop()
            provider.close()


def test_a_lagging_store_watch_resumes_without_gap_or_duplicate() -> None:
    """With a 2-update watcher queue on the server, batches of 50 changes make the dashboard's
    watch lag; it resumes from the last revision it handed on, so the page gets each change
    exactly once (without the resume it would get a failure and the end of the stream)."""
    names = [f"v{i:02d}" for i in range(50)]
    with (
        ServeProcess("--watch-queue-size", "2") as store,
        dspex.Session(store=store.address) as session,
    ):
        for name in names:
            session.register(name, int, 0)
        with DashboardProcess(store.address) as dashboard:
            path = f"{dashboard.url}api/sessions/{session.session_id}/events"
            with urllib.request.urlopen(path, timeout=20) as stream:
                events = events_of(stream, count=len(names) * 2 + 1)  # initial, history, deps
                for round_ in range(1, 6):
                    session.update(dict.fromkeys(names, round_))
                events = events_of(stream, count=len(names) * 5)
            assert dashboard.stop() == 0
    assert [e for e in events if e["type"] != "variable" or e["kind"] != "set"] == []
    changes = [(e["record"]["name"], e["record"]["version"]) for e in events]
    assert sorted(changes) == [(name, v) for name in names for v in range(2, 7)]


def events_of(stream: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` events of an open event stream, decoded (fewer if it ends)."""
    events: list[dict[str, Any]] = []
    while len(events) < count:
        raw = stream.readline()
        if not raw:
            break
        line = raw.decode().strip()
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
    return events


def test_the_stream_carries_on_after_the_store_restarts(tmp_path: Any) -> None:
    """A durable store killed with SIGKILL and started again: the page is told the store is
    unreachable, then live again, and gets the changes made after the restart, once each."""
    store = ServeProcess("--data", str(tmp_path / "data"))
    with store:
        client = SessionStoreProvider(store.address)
        view = SessionContext(client, client.create_session())
        view.register("temperature", float, 0.1)
        with DashboardProcess(store.address) as dashboard:
            path = f"{dashboard.url}api/sessions/{view.session_id}/events"
            with urllib.request.urlopen(path, timeout=30) as stream:
                assert [e["type"] for e in events_of(stream, 3)] == ["variable", "history", "deps"]
                store.kill()
                lost = events_of(stream, 1)[0]
                assert lost["type"] == "status" and lost["state"] == "reconnecting"
                assert "unreachable" in lost["message"]
                store.start()
                assert events_of(stream, 1)[0] == {"type": "status", "state": "live"}
                client.close()
                client = SessionStoreProvider(store.address)
                SessionContext(client, view.session_id).set("temperature", 0.9)
                change = events_of(stream, 1)[0]
            assert dashboard.stop() == 0
        client.close()
    assert change["type"] == "variable" and change["kind"] == "set"
    assert (change["record"]["value"], change["record"]["version"]) == (0.9, 2)
