"""dspex.Remote against real spawned workers joined to the session through the embedded store.

Item 3 of the DSPy issue in worker processes: a DSPy callback inside each worker records what the
LM call really received (model, temperature, system prompt) and the tests compare it with the
variables' values at the moment of the call, across ``session.set`` between calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import pytest
import remote_targets
from remote_targets import Probe, objective

import dspex
from dspex.errors import (
    VariableValueError,
    WorkerCrashedError,
    WorkerError,
    WorkerSetupError,
    WorkerTimeoutError,
)
from dspex.runtime import remote_traceback
from dspex.sim import answer_match, load_devset

pytestmark = pytest.mark.timeout(180)

QUESTIONS = [
    "What is 12 + 30?",
    "What is the capital of France?",
    "What is 7 * 6?",
    "What is the capital of Japan?",
    "What is 9 - 4?",
    "What is 15 + 27?",
]


@pytest.fixture
def remote(session: dspex.Session) -> Iterator[dspex.Remote]:
    """Two workers running a Probe in the test's session."""
    with dspex.Remote(Probe(), workers=2, timeout=60) as pool:
        yield pool


def assert_used(prediction: Any, session: dspex.Session) -> None:
    """The worker's LM call used exactly the session's current values."""
    call = prediction.lm_call
    assert call["pid"] == prediction.pid != os.getpid()
    assert call["model"] == session.get("model")
    assert call["kwargs"]["temperature"] == session.get("temperature")
    assert objective(call["system"]) == session.get("instructions")
    assert prediction.read_temperature == session.get("temperature")


def test_creating_a_remote_promotes_the_session_and_workers_join_it(
    session: dspex.Session, remote: dspex.Remote
) -> None:
    assert session.backend == "session_store"
    assert remote.address == session.address
    pids = remote.pids
    assert len(pids) == 2 and os.getpid() not in pids
    prediction = remote(question="What is 12 + 30?")
    assert isinstance(prediction, dspy.Prediction)
    assert prediction.pid in pids
    assert_used(prediction, session)


def test_every_worker_call_uses_the_values_at_that_moment(
    session: dspex.Session, remote: dspex.Remote
) -> None:
    changes: list[dict[str, Any]] = [
        {},
        {"temperature": 0.2},
        {"instructions": "Calculate step by step; give only the name of the capital city."},
        {"model": "dspex/sim-large", "temperature": 1.3},
        {"model": "dspex/sim-small", "instructions": "Answer in one word."},
    ]
    pids_seen: set[int] = set()
    for change in changes:
        if change:
            session.update(change)
        predictions = remote.map([{"question": q} for q in QUESTIONS])
        single = remote(question=QUESTIONS[0])
        for prediction in [*predictions, single]:
            assert_used(prediction, session)
            pids_seen.add(prediction.pid)
    assert pids_seen == set(remote.pids)  # both workers took calls


def test_a_change_between_calls_is_seen_by_the_very_next_call_on_any_worker(
    session: dspex.Session, remote: dspex.Remote
) -> None:
    for step in range(30):
        value = round(0.05 * step, 2)
        session.set("temperature", value)
        prediction = remote(question=QUESTIONS[step % len(QUESTIONS)])
        assert prediction.read_temperature == value  # the worker's cached read
        assert prediction.lm_call["kwargs"]["temperature"] == value  # what the LM received


def test_map_returns_results_in_input_order_with_progress(
    session: dspex.Session, remote: dspex.Remote
) -> None:
    progress: list[tuple[int, int]] = []
    inputs = [{"question": f"What is {n} + 1?"} for n in range(20)]
    results = remote.map(inputs, progress=lambda done, total: progress.append((done, total)))
    assert [r.answer for r in results] == [Probe()(**i).answer for i in inputs]
    assert progress[0] == (0, 20) and progress[-1] == (20, 20)
    examples = [dspy.Example(question=q, answer="").with_inputs("question") for q in QUESTIONS]
    assert [r.answer for r in remote.map(examples, progress=False)] == [
        r.answer for r in remote.map([{"question": q} for q in QUESTIONS], progress=True)
    ]
    with pytest.raises(WorkerError, match=r"inputs\[1\] is 'oops'"):
        remote.map([{"question": "What is 1 + 1?"}, "oops"])


def test_the_progress_bar_is_drawn_only_for_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from dspex.remote._progress import progress_callback

    def callback(done: int, total: int) -> None:
        return None

    with progress_callback(callback, "x") as given:
        assert given is callback
    with progress_callback(False, "x") as off:
        assert off is None
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    with progress_callback(None, "x") as auto:
        assert auto is None
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    with progress_callback(None, "x") as bar:
        assert bar is not None
        bar(0, 2)
        bar(2, 2)
        with progress_callback(True, "inner") as inner:  # e.g. a Remote started under a bar
            # a rich that keeps a stack of live displays nests the bar; an older one cannot
            assert (inner is not None) == hasattr(Console(), "_live_stack")
            if inner is not None:
                inner(1, 1)


def test_dspy_evaluate_runs_through_the_workers_with_the_local_score(
    session: dspex.Session, remote: dspex.Remote
) -> None:
    devset = load_devset()[:12]
    evaluate = dspy.Evaluate(devset=devset, metric=answer_match, num_threads=2)
    remote_score = evaluate(remote).score
    local_score = evaluate(Probe()).score
    assert remote_score == local_score


def test_async_calls_run_on_the_workers(session: dspex.Session, remote: dspex.Remote) -> None:
    import asyncio

    async def both() -> list[Any]:
        return list(await asyncio.gather(*(remote.acall(question=q) for q in QUESTIONS[:4])))

    predictions = asyncio.run(both())
    for prediction in predictions:
        assert_used(prediction, session)


def test_the_configured_lm_is_shipped_when_no_model_is_bound(session: dspex.Session) -> None:
    lm = dspex.SimLM("dspex/sim-large", cpu_work=10)
    with dspy.context(lm=lm), dspex.Remote(remote_targets.UsesConfiguredLM(), workers=1) as pool:
        prediction = pool(question="What is 2 + 2?")
    assert (prediction.model, prediction.cpu_work) == ("dspex/sim-large", 10)


def test_errors_raised_in_the_worker_come_back_with_type_and_traceback(
    session: dspex.Session,
) -> None:
    session.register("temperature", float, 0.7, min=0.0, max=2.0)
    with dspex.Remote(remote_targets.Failing(), workers=1) as pool:
        with pytest.raises(ValueError, match="refused this input") as caught:
            pool(kind="value")
        assert "forward" in (remote_traceback(caught.value) or "")
        with pytest.raises(VariableValueError, match=r"max=2\.0"):
            pool(kind="dspex")  # the worker's session.set is refused by the store
    assert session.get("temperature") == 0.7


def test_a_call_lost_to_a_crash_is_retried_once_on_a_new_worker(
    session: dspex.Session, tmp_path: Path
) -> None:
    marker = tmp_path / "crashed-once"
    with dspex.Remote(remote_targets.Crashy(), workers=1, retries=1) as pool:
        first_pid = pool.pids[0]
        prediction = pool(question="What is 2 + 3?", marker=str(marker))
        assert marker.read_text() == str(first_pid)  # the first attempt died here
        assert prediction.pid != first_pid  # the retry ran on the replacement worker
        local = remote_targets.Crashy()(question="What is 2 + 3?", marker=str(marker))
        assert prediction.answer == local.answer


def test_a_call_that_keeps_crashing_fails_with_a_clear_error(session: dspex.Session) -> None:
    with dspex.Remote(remote_targets.Crashy(), workers=1, retries=1) as pool:
        with pytest.raises(WorkerCrashedError, match=r"exited with code 3.*tried 2 times"):
            pool(question="What is 2 + 3?")
        survivor = pool.map([{"question": "What is 1 + 1?", "marker": __file__}], progress=False)
        assert survivor[0].pid in pool.pids  # the pool restarted its worker and carries on


def test_a_call_past_its_timeout_fails_and_the_worker_is_replaced(session: dspex.Session) -> None:
    with dspex.Remote(remote_targets.Sleepy(), workers=1, timeout=1.0) as pool:
        stuck_pid = pool.pids[0]
        with pytest.raises(WorkerTimeoutError):
            pool(seconds=60)
        after = pool(seconds=0)
        assert after.pid != stuck_pid


def test_a_module_that_cannot_be_pickled_fails_at_construction_naming_it(
    session: dspex.Session,
) -> None:
    with pytest.raises(WorkerSetupError) as caught:
        dspex.Remote(remote_targets.HoldsALock(), workers=1)
    message = str(caught.value)
    assert "HoldsALock" in message
    assert "module.guard" in message and "_thread.lock" in message
    assert session.backend == "local"  # nothing was started


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"workers": 0}, "workers must be an integer >= 1"),
        ({"retries": -1}, "retries must be an integer >= 0"),
        ({"timeout": 0}, "timeout must be positive"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    session: dspex.Session, kwargs: dict[str, Any], text: str
) -> None:
    with pytest.raises(WorkerSetupError, match=text):
        dspex.Remote(remote_targets.Sleepy(), **kwargs)
    assert session.backend == "local"


def test_a_remote_needs_a_session() -> None:
    with pytest.raises(dspex.errors.SessionError, match="no active dspex session"):
        dspex.Remote(remote_targets.Sleepy())


def test_closing_the_session_closes_its_workers_and_store(tmp_path: Path) -> None:
    with dspex.Session() as session:
        pool = dspex.Remote(remote_targets.Sleepy(), workers=2)
        pids = pool.pids
        socket_dir = Path((session.address or "")[len("unix://") :]).parent
        assert pool(seconds=0).pid in pids
    assert pool.closed
    assert not socket_dir.exists()
    for pid in pids:
        assert pid is not None and not Path(f"/proc/{pid}").exists()
    with pytest.raises(WorkerError, match="closed"):
        pool(seconds=0)
