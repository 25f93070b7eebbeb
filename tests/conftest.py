"""Shared fixtures: a real redis-server, and clean DSPy settings, for the test packages.

``redis_server`` starts one ``redis-server`` per test session on a free loopback port (no
persistence); tests isolate themselves with their own key prefix. Without the binary the tests
that need it are skipped with the way to install it (``make test`` installs it through apt).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the whole test session (no persistence)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def clean_dspy_settings() -> Iterator[None]:
    """Restore DSPy's global settings and dspex's current session after a test.

    Test packages that run DSPy make it autouse in their own conftest.
    """
    import copy
    import importlib

    from dspex.session import _current

    settings = importlib.import_module("dspy.dsp.utils.settings")
    saved = copy.copy(settings.main_thread_config)
    overlay_token = settings.thread_local_overrides.set(
        settings.thread_local_overrides.get().__class__()
    )
    session_token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(session_token)
        settings.thread_local_overrides.reset(overlay_token)
        settings.main_thread_config.clear()
        settings.main_thread_config.update(saved)
