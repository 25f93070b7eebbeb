"""The one store factory (``dspex.state.client.connect.open_store``): None, a provider or an
address, as Session, SessionContext.connect, the CLI and Remote use it."""

from __future__ import annotations

import pytest
from support.bridge import FLOAT

from dspex import errors
from dspex.state import LocalProvider, SessionContext
from dspex.state.client.connect import open_store
from dspex.state.store import CachedProvider, SessionStoreProvider, StoreServer


def test_none_opens_a_new_in_process_provider_and_a_provider_is_used_as_is() -> None:
    first, second = open_store(), open_store()
    try:
        assert isinstance(first, LocalProvider) and first is not second
        assert open_store(first) is first
    finally:
        first.close()
        second.close()


def test_an_address_opens_a_store_client(server: StoreServer, local: LocalProvider) -> None:
    client = open_store(server.address, timeout=5.0)
    try:
        assert isinstance(client, SessionStoreProvider) and client.timeout == 5.0
        session_id = client.create_session()
        client.register_variable(session_id, "t", FLOAT, 0.7)
        assert local.get_variable(session_id, "t").value == 0.7
    finally:
        client.close()


def test_following_a_session_gives_the_coherent_cache(
    server: StoreServer, client: SessionStoreProvider, session_id: str
) -> None:
    cached = open_store(server.address, follow=session_id)
    try:
        assert isinstance(cached, CachedProvider)
        assert cached.get_variable(session_id, "t").value == 0.7
    finally:
        cached.close()


def test_following_an_unknown_session_fails_and_leaves_nothing_open(server: StoreServer) -> None:
    with pytest.raises(errors.SessionNotFoundError, match="nope"):
        open_store(server.address, follow="nope")
    assert server.watch_count == 0


def test_session_context_connect_goes_through_the_factory(
    server: StoreServer, session_id: str
) -> None:
    assert SessionContext.connector is open_store
    context = SessionContext.connect(server.address, session_id)
    try:
        assert isinstance(context.provider, CachedProvider)
        assert context.get("t") == 0.7
    finally:
        context.provider.close()
