"""The shared StateProvider contract over transport x engine (kinds in tests/support/providers.py).

Every kind (local and through a real store server, each on memory, SQLite and Redis; the
worker's cache on memory) passes the whole contract; a deviation is an explicit skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial

import pytest

# The contract modules are imported, not collected: rewrite their asserts for readable failures.
pytest.register_assert_rewrite("support.contract.state_provider", "support.contract.hardening")

from support.contract.hardening import HardeningContract  # noqa: E402
from support.contract.state_provider import StateProviderContract  # noqa: E402
from support.providers import PROVIDER_KINDS, engine_of, provide  # noqa: E402

from dspex.state import StateProvider  # noqa: E402


@pytest.fixture(name="provider_kind", params=PROVIDER_KINDS)
def _provider_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="make_provider")
def _make_provider(
    provider_kind: str, request: pytest.FixtureRequest
) -> Callable[..., AbstractContextManager[StateProvider]]:
    """``make_provider(history_size=3)``: a fresh provider of the same kind with options."""
    redis_url = None
    if engine_of(provider_kind) == "redis":
        redis_url = request.getfixturevalue("redis_server").url
    return partial(provide, provider_kind, redis_url=redis_url)


@pytest.fixture(name="provider")
def _provider(
    make_provider: Callable[..., AbstractContextManager[StateProvider]],
) -> Iterator[StateProvider]:
    with make_provider() as provider:
        yield provider


class TestStateProvider(StateProviderContract):
    """Every provider kind passes the whole contract."""


class TestHardening(HardeningContract):
    """Dependencies, locks, expiry and limits on every provider kind."""
