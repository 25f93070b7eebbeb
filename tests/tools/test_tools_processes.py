"""Tools across real processes: spawned Remote workers call tools the parent owns (also from
``dspy.ReAct``), concurrently; a spawned owner killed with SIGKILL fails its callers at once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tool_targets
from support import wait_until

import dspex
from dspex.errors import ToolArgumentsError, ToolError, ToolUnavailableError

pytestmark = pytest.mark.slow

CALL_TIMEOUT = 60.0
"""Generous bound on any one call (the machine may be loaded); a hang fails the test."""


def test_a_worker_calls_a_tool_that_the_parent_runs(session: dspex.Session) -> None:
    calls: list[tuple[str, int]] = []

    @dspex.tool
    def weather(city: str) -> str:
        """The forecast for a city."""
        calls.append((city, os.getpid()))
        return f"forecast for {city}: sunny"

    with dspex.Remote(tool_targets.ToolCaller(weather), workers=1, timeout=CALL_TIMEOUT) as pool:
        reply = pool(city="Oslo")
    assert reply["result"] == "forecast for Oslo: sunny"
    assert reply["pid"] != os.getpid()  # called in the worker ...
    assert calls == [("Oslo", os.getpid())]  # ... run here, by the owner


def test_react_in_a_worker_uses_a_tool_owned_by_the_parent(session: dspex.Session) -> None:
    calls: list[tuple[str, int]] = []

    @dspex.tool
    def weather(city: str) -> str:
        """The forecast for a city."""
        calls.append((city, os.getpid()))
        return f"forecast for {city}: sunny"

    agent = tool_targets.ReActInWorker([weather.as_dspy()])
    with dspex.Remote(agent, workers=1, timeout=CALL_TIMEOUT) as pool:
        prediction = pool(question="What is the weather in Paris?")
    assert prediction.pid != os.getpid()
    assert prediction.trajectory["tool_name_0"] == "weather"
    assert prediction.trajectory["tool_args_0"] == {"city": "Paris"}
    assert prediction.trajectory["observation_0"] == "forecast for Paris: sunny"
    assert prediction.answer == "forecast for Paris: sunny"
    assert calls == [("Paris", os.getpid())]


def test_tool_errors_reach_the_worker_and_come_back_with_the_owner_traceback(
    session: dspex.Session,
) -> None:
    ran: list[int] = []

    @dspex.tool
    def checked_divide(a: int, b: int) -> float:
        """a / b."""
        ran.append(b)
        return a / b

    with dspex.Remote(
        tool_targets.ToolCaller(checked_divide), workers=1, timeout=CALL_TIMEOUT
    ) as pool:
        with pytest.raises(ToolError, match=r"'checked_divide' raised ZeroDivisionError") as e:
            pool(a=1, b=0)
        assert e.value.error_type == "ZeroDivisionError"
        assert "return a / b" in e.value.remote_traceback
        with pytest.raises(ToolArgumentsError, match=r"argument 'b': 'zero' is not of type"):
            pool(a=1, b="zero")
        assert pool(a=6, b=3)["result"] == 2.0
    assert ran == [0, 3]  # the refused call never ran


def test_two_workers_call_the_parent_concurrently(session: dspex.Session) -> None:
    both_in = threading.Barrier(2, timeout=CALL_TIMEOUT)
    seen: list[str] = []

    @dspex.tool
    def rendezvous(name: str) -> str:
        """Returns only once two calls are running at the same time."""
        both_in.wait()  # a BrokenBarrierError (a ToolError for the caller) if calls serialize
        seen.append(name)
        return name.upper()

    caller = tool_targets.ToolCaller(rendezvous)
    with dspex.Remote(caller, workers=2, timeout=CALL_TIMEOUT) as pool:
        replies = pool.map([{"name": "a"}, {"name": "b"}])
    assert [r["result"] for r in replies] == ["A", "B"]
    assert len({r["pid"] for r in replies}) == 2
    assert sorted(seen) == ["a", "b"]


def test_a_worker_finds_a_tool_by_name(session: dspex.Session) -> None:
    @dspex.tool
    def greet(name: str) -> str:
        """Say hello."""
        return f"hello {name}"

    with dspex.Remote(tool_targets.ToolByName(), workers=1, timeout=CALL_TIMEOUT) as pool:
        reply = pool(tool="greet", arguments={"name": "Ada"})
    assert reply["result"] == "hello Ada"
    assert reply["description"] == "Say hello."


@pytest.fixture
def owner_process(session: dspex.Session, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A spawned process that owns ``owner_pid`` and ``stall`` in the session (killed after)."""
    address = session.promote()
    ready, started = tmp_path / "ready", tmp_path / "started"
    process = multiprocessing.get_context("spawn").Process(
        target=tool_targets.run_owner, args=(address, session.session_id, ready, started)
    )
    process.start()
    try:
        assert wait_until(ready.exists, timeout=60.0), "the owner process did not start"
        yield {"process": process, "pid": int(ready.read_text()), "started": started}
    finally:
        if process.is_alive():
            process.kill()
        process.join(30)


def test_a_killed_owner_fails_its_callers_at_once_naming_tool_and_owner(
    session: dspex.Session, owner_process: dict[str, Any]
) -> None:
    assert session.call_tool("owner_pid") == owner_process["pid"]
    owner_id = {t.name: t.owner for t in session.list_tools()}["stall"]
    assert f":{owner_process['pid']}:" in owner_id
    outcome: list[BaseException | object] = []
    call = threading.Thread(
        target=lambda: outcome.append(_outcome(session, "stall", {"seconds": 600}))
    )
    call.start()
    assert wait_until(owner_process["started"].exists, timeout=60.0), (
        "the call never reached the owner"
    )
    os.kill(owner_process["pid"], signal.SIGKILL)
    call.join(CALL_TIMEOUT)
    assert not call.is_alive(), "the caller hangs after its tool's owner died"
    [error] = outcome
    assert isinstance(error, ToolUnavailableError)
    assert f"tool 'stall': its owner {owner_id} went away" in str(error)
    with pytest.raises(ToolUnavailableError) as again:
        session.call_tool("owner_pid")
    assert f"tool 'owner_pid' cannot run: its owner {owner_id} is not connected" in str(
        again.value
    )
    assert {t.name: t.connected for t in session.list_tools()} == {
        "owner_pid": False,
        "stall": False,
    }


def _outcome(session: dspex.Session, name: str, arguments: dict[str, Any]) -> object:
    try:
        return session.call_tool(name, arguments)
    except BaseException as exc:
        return exc
