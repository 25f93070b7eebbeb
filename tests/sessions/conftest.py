"""Fixtures for the session and error-case tests of issue 10 (point 9)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dspex


@pytest.fixture
def session() -> Iterator[dspex.Session]:
    """An active in-process session."""
    with dspex.Session() as active:
        yield active
