"""Fixtures for the DSPy integration tests: clean DSPy settings, a recorder, a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.binding import CallRecorder

import dspex


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> None:
    """Every test here starts with clean DSPy settings and no current session."""


@pytest.fixture
def recorder() -> CallRecorder:
    """A fresh recorder; use it with ``dspy.context(callbacks=[recorder])``."""
    return CallRecorder()


@pytest.fixture
def session() -> Iterator[dspex.Session]:
    """An active local session."""
    with dspex.Session() as active:
        yield active
