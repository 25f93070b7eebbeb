"""The promises of ``dspex.Remote``, checked on both backends: spawned workers and Ray actors.

Every test takes ``backend`` and runs twice with the same program code: once with spawned worker
processes, once with actors of a real local Ray instance (see conftest). What the workers' LM
calls received is recorded inside the workers by a DSPy callback and compared with the session.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import backend_targets
import dspy
import pytest
from backend_targets import Probe

import dspex
from dspex.errors import (
    VariableValueError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
)

pytestmark = pytest.mark.timeout(240)

QUESTIONS = ["What is 12 + 30?", "What is the capital of France?", "What is 7 * 6?"]


def remote(module: Any, backend: str, **options: Any) -> dspex.Remote:
    """A Remote on ``backend`` with a generous setup timeout (the machine is shared)."""
    return dspex.Remote(module, backend=backend, setup_timeout=120, **options)  # type: ignore[arg-type]


def test_the_session_is_promoted_and_every_call_uses_its_values_at_that_moment(
    session: dspex.Session, backend: str
) -> None:
    with remote(Probe(), backend, workers=2, timeout=60) as pool:
        assert session.backend == "session_store" and pool.address == session.address
        assert pool.address.startswith("grpc://" if backend == "ray" else "unix://")
        assert (session.store_token is not None) == (backend == "ray")
        pids: set[int] = set()
        for step, change in enumerate(
            [{}, {"temperature": 0.2}, {"model": "dspex/sim-large", "temperature": 1.3}]
        ):
            if change:
                session.update(change)
            for prediction in [
                *pool.map([{"question": q} for q in QUESTIONS] * 2),
                pool(question=QUESTIONS[step]),
            ]:
                assert prediction.pid != os.getpid()
                assert prediction.lm_call == {
                    "model": session.get("model"),
                    "temperature": session.get("temperature"),
                }
                assert prediction.read_temperature == session.get("temperature")
                pids.add(prediction.pid)
        assert pids == set(pool.pids) and len(pids) == 2  # both workers took calls


def test_a_set_is_seen_by_the_very_next_call_of_every_worker(
    session: dspex.Session, backend: str
) -> None:
    with remote(Probe(), backend, workers=2, timeout=60) as pool:
        for step in range(8):
            value = round(0.1 * step, 2)
            session.set("temperature", value)
            seen = pool.map([{"question": q} for q in QUESTIONS * 2], progress=False)
            assert {p.read_temperature for p in seen} == {value}
            assert {p.lm_call["temperature"] for p in seen} == {value}
            assert len({p.pid for p in seen}) == 2


def test_workers_write_the_session_and_the_store_checks_their_writes(
    session: dspex.Session, backend: str
) -> None:
    session.register("temperature", float, 0.7, min=0.0, max=2.0)
    with remote(backend_targets.Writer(), backend, workers=1) as pool:
        assert pool(name="temperature", value=1.1).read == 1.1
        assert session.get("temperature") == 1.1
        with pytest.raises(VariableValueError, match=r"max=2\.0"):
            pool(name="temperature", value=9.0)
    assert session.get("temperature") == 1.1


def test_map_keeps_input_order_and_reports_progress(session: dspex.Session, backend: str) -> None:
    progress: list[tuple[int, int]] = []
    started: list[tuple[int, int]] = []
    inputs = [{"question": f"What is {n} + 1?"} for n in range(12)]
    with remote(Probe(), backend, workers=2, progress=lambda *seen: started.append(seen)) as pool:
        assert started[0] == (0, 2) and started[-1] == (2, 2)  # workers reported as they start
        assert [ready for ready, _ in started] == sorted({ready for ready, _ in started})
        results = pool.map(inputs, progress=lambda done, total: progress.append((done, total)))
        examples = [dspy.Example(question=q).with_inputs("question") for q in QUESTIONS]
        by_example = pool.map(examples, progress=False)
    assert [r.answer for r in results] == [Probe()(**i).answer for i in inputs]
    assert [r.answer for r in by_example] == [Probe()(question=q).answer for q in QUESTIONS]
    assert progress[0] == (0, 12) and progress[-1] == (12, 12) and len(progress) == 13


def test_tools_run_in_their_owner_process(session: dspex.Session, backend: str) -> None:
    calls: list[tuple[str, int]] = []

    @dspex.tool
    def weather(city: str) -> str:
        """The forecast for a city."""
        calls.append((city, os.getpid()))
        return f"forecast for {city}: sunny"

    with remote(backend_targets.ToolCaller(weather), backend, workers=1, timeout=60) as pool:
        reply = pool(city="Oslo")
    assert reply == {"result": "forecast for Oslo: sunny", "pid": reply["pid"]}
    assert reply["pid"] != os.getpid()  # called in the worker, run here by the owner
    assert calls == [("Oslo", os.getpid())]


def test_the_configured_lm_is_shipped(session: dspex.Session, backend: str) -> None:
    lm = dspex.SimLM("dspex/sim-large", cpu_work=10)
    module = backend_targets.UsesConfiguredLM()
    with dspy.context(lm=lm), remote(module, backend, workers=1) as pool:
        prediction = pool(question="What is 2 + 2?")
    assert (prediction.model, prediction.cpu_work) == ("dspex/sim-large", 10)


def test_a_call_lost_to_a_crash_is_retried_on_a_replacement(
    session: dspex.Session, backend: str, tmp_path: Path
) -> None:
    marker = tmp_path / "crashed-once"
    with remote(backend_targets.Crashy(), backend, workers=1, retries=1) as pool:
        first_pid = pool.pids[0]
        prediction = pool(marker=str(marker))
        assert marker.read_text() == str(first_pid)  # the first attempt died there
        assert prediction.pid != first_pid and prediction.pid == pool.pids[0]


def test_a_call_that_keeps_crashing_fails_with_worker_crashed_error(
    session: dspex.Session, backend: str
) -> None:
    with remote(backend_targets.Crashy(), backend, workers=1, retries=1) as pool:
        with pytest.raises(WorkerCrashedError, match=r"tried 2 times \(retries=1\)"):
            pool()
        assert pool(marker=__file__).pid == pool.pids[0]  # the pool carries on


def test_a_call_past_its_timeout_fails_and_its_worker_is_replaced(
    session: dspex.Session, backend: str
) -> None:
    with remote(backend_targets.Sleepy(), backend, workers=1, timeout=2.0) as pool:
        stuck = pool.pids[0]
        with pytest.raises(WorkerTimeoutError, match=r"timeout of 2\.0s"):
            pool(seconds=120)
        assert pool(seconds=0).pid != stuck


def test_closing_the_session_stops_the_workers_and_fails_later_calls(backend: str) -> None:
    with dspex.Session() as session:
        pool = remote(backend_targets.Sleepy(), backend, workers=2)
        pids = pool.pids
        assert pool(seconds=0).pid in pids
        running = threading.Thread(target=lambda: _swallow(pool, seconds=60))
        running.start()
    running.join(60)
    assert not running.is_alive(), "a running call hangs after the session closed"
    assert pool.closed and session.closed
    for pid in pids:
        assert pid is not None and _gone(pid)
    with pytest.raises(WorkerError, match="closed"):
        pool(seconds=0)


def _swallow(pool: dspex.Remote, **kwargs: Any) -> None:
    try:
        pool(**kwargs)
    except WorkerError:
        pass


def _gone(pid: int, timeout: float = 30.0) -> bool:
    """True once process ``pid`` has exited (a Ray actor exits shortly after its kill)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return True
        if status == "Z":
            return True
        time.sleep(0.1)
    return False


def test_workers_wait_for_a_store_that_answers_late(backend: str) -> None:
    """A fleet starting at once can keep the store from answering for a while: workers whose
    first contact fails (here: the store is down for 6 s) wait for it instead of breaking the
    pool with three quick setup failures."""
    from dspex.state import LocalProvider
    from dspex.state.store import StoreServer

    provider = LocalProvider()
    server = StoreServer.start(provider, "127.0.0.1:0")
    address = server.address
    restarted: list[StoreServer] = []
    comeback = threading.Timer(
        6.0, lambda: restarted.append(StoreServer.start(provider, address[len("grpc://") :]))
    )
    try:
        with dspex.Session(store=address) as session:
            session.register("temperature", float, 0.5)
            server.stop(grace=0)
            comeback.start()
            with remote(backend_targets.Writer(), backend, workers=2) as pool:
                assert restarted, "the workers were ready before the store was back"
                assert pool(name="temperature", value=0.9).read == 0.9
    finally:
        comeback.cancel()
        for running in (server, *restarted):
            running.stop(grace=0)
