"""Fixtures for the tool tests: clean DSPy settings, a fresh session, a real store server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.session_fixtures import (  # noqa: F401 - imported to register the fixtures
    active_session,
    clean_dspy,
)

from dspex.state import LocalProvider
from dspex.state.store import StoreServer


@pytest.fixture
def store() -> Iterator[StoreServer]:
    """A session store server on a loopback port, over an in-memory provider."""
    provider = LocalProvider()
    server = StoreServer.start(provider, "127.0.0.1:0")
    try:
        yield server
    finally:
        server.stop(grace=0.2)
        provider.close()
