"""Fixtures for the DSPy integration tests: clean DSPy settings, a recorder, a session."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator

import pytest
from dspy_support import CallRecorder

import dspex
from dspex.session import _current

dspy_settings_module = importlib.import_module("dspy.dsp.utils.settings")


@pytest.fixture(autouse=True)
def clean_dspy_settings() -> Iterator[None]:
    """Restore DSPy's global settings and dspex's current session after every test."""
    saved = copy.copy(dspy_settings_module.main_thread_config)
    overlay_token = dspy_settings_module.thread_local_overrides.set(
        dspy_settings_module.thread_local_overrides.get().__class__()
    )
    session_token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(session_token)
        dspy_settings_module.thread_local_overrides.reset(overlay_token)
        dspy_settings_module.main_thread_config.clear()
        dspy_settings_module.main_thread_config.update(saved)


@pytest.fixture
def recorder() -> CallRecorder:
    """A fresh recorder; use it with ``dspy.context(callbacks=[recorder])``."""
    return CallRecorder()


@pytest.fixture
def session() -> Iterator[dspex.Session]:
    """An active local session."""
    with dspex.Session() as active:
        yield active
