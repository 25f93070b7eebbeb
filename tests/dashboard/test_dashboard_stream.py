"""The event stream of a page that reads too slowly: told to restart, never given a gap.

The dashboard runs in this process (``DashboardServer``, real uvicorn) over a real
``dspex serve``; the "page" is a raw socket with a tiny receive buffer that stops reading.
"""

from __future__ import annotations

import socket
import time
import urllib.parse

import pytest
from serve_process import ServeProcess

import dspex
import dspex.dashboard._app as dashboard_app
from dspex.dashboard import DashboardServer
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
