"""Fixtures for the dspex.tune tests: clean DSPy settings and a fresh in-process session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.serve_process import ServeProcess

import dspex

sys.path.insert(0, str(Path(__file__).parent))  # tune_targets, importable by spawned workers


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> None:
    """Every test here starts with clean DSPy settings and no current session."""


@pytest.fixture
def session() -> Iterator[dspex.Session]:
    """An in-process session with temperature (float 0..2), top_k (int 1..10) and style."""
    with dspex.Session() as active:
        _register(active)
        yield active


def _register(session: dspex.Session) -> None:
    session.register("temperature", float, 0.7, min=0.0, max=2.0)
    session.register("top_k", int, 5, min=1, max=10)
    session.register("style", dspex.Choice("terse", "plain", "verbose"), "plain")


@pytest.fixture
def store() -> Iterator[ServeProcess]:
    """A real ``dspex serve`` process (memory engine)."""
    with ServeProcess() as server:
        yield server


@pytest.fixture
def store_session(store: ServeProcess) -> Iterator[dspex.Session]:
    """A session in that store with the same three variables."""
    with dspex.Session(store.address) as active:
        _register(active)
        yield active
