"""An acquire with policy 'wait' that gives up says it waited and what is left (a longer wait,
or preempting), instead of advising to wait; in-process and through a real store alike."""

from __future__ import annotations

import pytest

import dspex
from dspex.errors import LockedError

WAITED = r"Waited 0\.\ds with policy 'wait' and it is still held: wait longer .* policy 'preempt'"


def test_a_wait_that_gives_up_in_process_says_it_waited() -> None:
    with dspex.Session() as session:
        session.register("temperature", float, 0.7)
        with (
            session.optimizing("temperature", optimizer_id="grid"),
            pytest.raises(LockedError, match=WAITED) as refused,
        ):
            session.provider.acquire_lock(
                session.session_id, "temperature", owner="other", optimizer_id="rival",
                policy="wait", timeout=0.3,
            )  # fmt: skip
    assert "locked by optimizer 'grid'" in refused.value.message
    assert "Wait for it" not in refused.value.message
    assert refused.value.holder == "grid"
