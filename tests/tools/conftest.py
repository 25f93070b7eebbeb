"""Fixtures for the tool tests: clean DSPy settings, a fresh session, a real store server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dspex
from dspex.state import LocalProvider
from dspex.state.store import StoreServer


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> None:
    """Every test here starts with clean DSPy settings and no current session."""


@pytest.fixture
def session() -> Iterator[dspex.Session]:
    """An active in-process session (closed, with anything it started, after the test)."""
    with dspex.Session() as active:
        yield active


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
