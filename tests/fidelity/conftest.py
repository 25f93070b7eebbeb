"""Fixtures for the differential fidelity suite: clean DSPy settings per test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> None:
    """Every case starts with clean DSPy settings and no current session."""
