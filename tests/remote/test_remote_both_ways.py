"""One program body, run in process and then through ``dspex.Remote(workers=2)``: same results,
same variable histories (item 5 of the DSPy issue)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from remote_targets import Probe, objective

import dspex

pytestmark = pytest.mark.timeout(180)

QUESTIONS = [
    "What is 12 + 30?",
    "What is the capital of France?",
    "What is 7 * 6?",
    "Is this review positive or negative? 'Loved every minute.'",
]
CHANGES: list[dict[str, Any]] = [
    {},
    {"temperature": 0.1},
    {"instructions": "Calculate step by step; give only the name of the capital city."},
    {"model": "dspex/sim-large"},
    {"temperature": 1.6, "model": "dspex/sim-small"},
]
NAMES = ("temperature", "instructions", "model")


def body(session: dspex.Session, run: Callable[..., Any]) -> list[tuple[Any, ...]]:
    """The program body: change variables between batches of calls; return what came back."""
    seen = []
    for change in CHANGES:
        if change:
            session.update(change)
        for question in QUESTIONS:
            prediction = run(question=question)
            call = prediction.lm_call
            seen.append(
                (
                    prediction.answer,
                    prediction.reasoning,
                    call["model"],
                    call["kwargs"]["temperature"],
                    objective(call["system"]),
                )
            )
    session.rollback("temperature", 1)
    return seen


def histories(session: dspex.Session) -> dict[str, list[tuple[int, Any, int]]]:
    return {
        name: [(r.version, r.value, r.revision) for r in session.history(name)] for name in NAMES
    }


def test_the_same_body_gives_the_same_results_and_histories_locally_and_remotely() -> None:
    with dspex.Session() as session:
        program = Probe()
        local_results = body(session, program)
        local_histories = histories(session)
        assert session.backend == "local"

    with dspex.Session() as session:
        program = Probe()
        with dspex.Remote(program, workers=2) as remote:
            remote_results = body(session, remote)
            remote_histories = histories(session)
            pids = set(remote.pids)
        assert session.backend == "session_store"

    assert remote_results == local_results
    assert remote_histories == local_histories
    assert len(local_results) == len(CHANGES) * len(QUESTIONS)
    assert len({row[2] for row in local_results}) == 3  # the model really changed
    assert len(pids) == 2
