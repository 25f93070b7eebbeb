"""Fixtures for the DSPy-facing tests: clean DSPy settings around each test, a fresh session.

A test folder that wants them imports them in its ``conftest.py``; importing ``clean_dspy``
makes it autouse for that folder.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dspex


@pytest.fixture(name="_clean_dspy", autouse=True)
def clean_dspy(clean_dspy_settings: None) -> None:
    """Every test of the folder starts with clean DSPy settings and no current session."""


@pytest.fixture(name="session")
def active_session() -> Iterator[dspex.Session]:
    """An active in-process session (closed, with anything it started, after the test)."""
    with dspex.Session() as active:
        yield active
