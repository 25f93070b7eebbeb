"""Fixtures for the dspex.Remote and promotion tests: clean DSPy settings, a fresh session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dspex


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> None:
    """Every test here starts with clean DSPy settings and no current session."""


@pytest.fixture
def session() -> Iterator[dspex.Session]:
    """An active in-process session (closed, with anything it started, after the test)."""
    with dspex.Session() as active:
        yield active
