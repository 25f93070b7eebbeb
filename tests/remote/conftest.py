"""Fixtures for the dspex.Remote and promotion tests: clean DSPy settings, a fresh session."""

from support.session_fixtures import (  # noqa: F401 - imported to register the fixtures
    active_session,
    clean_dspy,
)
