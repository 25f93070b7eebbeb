"""``dspex.Remote`` ships the configured LM to its workers, or names the LM that cannot travel."""

from __future__ import annotations

import os
from collections.abc import Iterator

import dspy
import pytest
from session_targets import LockedSimLM, WhichLM

import dspex
from dspex.errors import WorkerSetupError


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> Iterator[None]:
    """Clean DSPy settings and no current session around each test."""
    yield


def test_an_lm_that_cannot_be_pickled_is_an_error_at_remote_creation(
    session: dspex.Session,
) -> None:
    dspy.configure(lm=LockedSimLM("dspex/sim-large"))
    with pytest.raises(WorkerSetupError) as caught:
        dspex.Remote(WhichLM(), workers=1)
    message = str(caught.value)
    assert "dspy.settings.lm" in message
    assert "LockedSimLM('dspex/sim-large')" in message
    assert "client_lock" in message  # the part that cannot travel
    assert caught.value.details["setting"] == "dspy.settings.lm"
    assert session.address is None  # nothing was started: not even promoted


@pytest.mark.slow
def test_an_lm_that_pickles_is_configured_in_every_worker(session: dspex.Session) -> None:
    dspy.configure(lm=dspex.SimLM("dspex/sim-large"))
    with dspex.Remote(WhichLM(), workers=2, timeout=60) as remote:
        results = remote.map([{"question": f"What is {i} + 1?"} for i in range(4)])
    assert {r.model for r in results} == {"dspex/sim-large"}
    assert os.getpid() not in {r.pid for r in results}
