"""Fixtures for the observability tests: clean DSPy settings and no current session."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> None:
    """Every test here starts with clean DSPy settings and no current session."""
