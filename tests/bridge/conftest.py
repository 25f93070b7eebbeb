"""Fixtures for the bridge tests: a real store server on loopback around a LocalProvider."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bridge_support import FLOAT, served

from dspex.state import LocalProvider
from dspex.state.store import SessionStoreProvider, StoreServer


@pytest.fixture(name="local")
def _local() -> Iterator[LocalProvider]:
    provider = LocalProvider()
    yield provider
    provider.close()


@pytest.fixture(name="server")
def _server(local: LocalProvider) -> Iterator[StoreServer]:
    with served(local) as server:
        yield server


@pytest.fixture(name="client")
def _client(server: StoreServer) -> Iterator[SessionStoreProvider]:
    client = SessionStoreProvider(server.address)
    client.wait_ready(10)
    yield client
    client.close()


@pytest.fixture(name="session_id")
def _session_id(client: SessionStoreProvider) -> str:
    session_id = client.create_session()
    client.register_variable(session_id, "t", FLOAT, 0.7)
    return session_id
