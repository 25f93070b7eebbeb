"""Fixtures for the DSPy integration tests: clean DSPy settings, a recorder, a session."""

from __future__ import annotations

import pytest
from support.binding import CallRecorder
from support.session_fixtures import (  # noqa: F401 - imported to register the fixtures
    active_session,
    clean_dspy,
)


@pytest.fixture
def recorder() -> CallRecorder:
    """A fresh recorder; use it with ``dspy.context(callbacks=[recorder])``."""
    return CallRecorder()
