"""Fixtures for the session and error-case tests of issue 10 (point 9): a fresh session."""

from support.session_fixtures import active_session  # noqa: F401 - registers the fixture
