"""Fixtures for store tests: a real store server on loopback around a LocalProvider, a client
connected to it, and a session with one variable ``t`` = 0.7.

A test folder that wants them imports them in its ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dspex.state import LocalProvider
from dspex.state.store import SessionStoreProvider, StoreServer
from support.bridge import FLOAT, served


@pytest.fixture(name="local")
def local_provider() -> Iterator[LocalProvider]:
    provider = LocalProvider()
    yield provider
    provider.close()


@pytest.fixture(name="server")
def store_server(local: LocalProvider) -> Iterator[StoreServer]:
    with served(local) as server:
        yield server


@pytest.fixture(name="client")
def store_client(server: StoreServer) -> Iterator[SessionStoreProvider]:
    client = SessionStoreProvider(server.address)
    client.wait_ready(10)
    yield client
    client.close()


@pytest.fixture(name="session_id")
def store_session(client: SessionStoreProvider) -> str:
    session_id = client.create_session()
    client.register_variable(session_id, "t", FLOAT, 0.7)
    return session_id
