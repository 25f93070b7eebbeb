"""Fixtures for the tool tests: clean DSPy settings, a fresh session, a real store server."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator

import pytest

import dspex
from dspex.session import _current
from dspex.state import LocalProvider
from dspex.state.store import StoreServer

dspy_settings_module = importlib.import_module("dspy.dsp.utils.settings")


@pytest.fixture(autouse=True)
def clean_dspy_settings() -> Iterator[None]:
    """Restore DSPy's global settings and dspex's current session after every test."""
    saved = copy.copy(dspy_settings_module.main_thread_config)
    overlay_token = dspy_settings_module.thread_local_overrides.set(
        dspy_settings_module.thread_local_overrides.get().__class__()
    )
    session_token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(session_token)
        dspy_settings_module.thread_local_overrides.reset(overlay_token)
        dspy_settings_module.main_thread_config.clear()
        dspy_settings_module.main_thread_config.update(saved)


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
