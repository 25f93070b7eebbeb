"""Fixtures for the engine tests: one engine of each kind on real storage.

Kinds: ``memory``; ``sqlite`` (a tmp directory); ``redis`` (the real redis-server of
``tests/conftest.py``, each test under its own key prefix).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.engines import ENGINE_KINDS, EngineMaker

from dspex.state.engines import Engine


@pytest.fixture(name="engine_kind", params=ENGINE_KINDS)
def _engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="engines")
def _engines(
    engine_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[EngineMaker]:
    url = request.getfixturevalue("redis_server").url if engine_kind == "redis" else None
    maker = EngineMaker(engine_kind, tmp_path, url)
    try:
        yield maker
    finally:
        maker.close_all()


@pytest.fixture(name="engine")
def _engine(engines: EngineMaker) -> Engine:
    return engines.new()
