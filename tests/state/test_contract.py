"""The shared StateProvider contract, run against every provider kind in tests/providers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial

import pytest

# The contract module is imported, not collected: rewrite its asserts for readable failures.
pytest.register_assert_rewrite("contract.state_provider", "contract.hardening")

from contract.hardening import HardeningContract  # noqa: E402
from contract.state_provider import StateProviderContract  # noqa: E402
from providers import PROVIDER_KINDS, provide  # noqa: E402

from dspex.state import StateProvider  # noqa: E402


@pytest.fixture(name="provider_kind", params=PROVIDER_KINDS)
def _provider_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="provider")
def _provider(provider_kind: str) -> Iterator[StateProvider]:
    with provide(provider_kind) as provider:
        yield provider


@pytest.fixture(name="make_provider")
def _make_provider(provider_kind: str) -> Callable[..., AbstractContextManager[StateProvider]]:
    """``make_provider(history_size=3)``: a fresh provider of the same kind with options."""
    return partial(provide, provider_kind)


class TestStateProvider(StateProviderContract):
    """Every provider kind passes the whole contract; a deviation is an explicit skip."""


class TestHardening(HardeningContract):
    """Dependencies, locks, expiry and limits on every provider kind."""
