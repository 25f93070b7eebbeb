"""Fixtures shared by the protocol tests: a raw gRPC channel and a dspex client to the module's
``server`` (a real ``dspex serve``; each test module starts its own with the flags it needs)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from support.serve_process import ServeProcess

from dspex.state.store import SessionStoreProvider

WAIT = 10.0


@pytest.fixture
def channel(server: ServeProcess) -> Iterator[grpc.Channel]:
    """A plain channel to the server: the tests speak the wire protocol through it."""
    with grpc.insecure_channel(server.address.removeprefix("grpc://")) as opened:
        yield opened


@pytest.fixture
def client(server: ServeProcess, token: str | None) -> Iterator[SessionStoreProvider]:
    """dspex's own Python client of the same server."""
    provider = SessionStoreProvider(server.address, token=token, timeout=WAIT)
    yield provider
    provider.close()


@pytest.fixture
def token() -> str | None:
    """The bearer token the module's server requires (None: none)."""
    return None
