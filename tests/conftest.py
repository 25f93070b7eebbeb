"""Shared fixtures: a real redis-server for every test package that needs one.

``redis_server`` starts one ``redis-server`` per test session on a free loopback port (no
persistence); tests isolate themselves with their own key prefix. Without the binary the tests
that need it are skipped with the way to install it (``make test`` installs it through apt).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the whole test session (no persistence)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server
