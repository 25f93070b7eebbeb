"""Named sessions from Python: create-or-join in a real ``dspex serve``, kept after exit.

Every test runs real processes against a real ``dspex serve`` on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.serve_process import ServeProcess, run_dspex

import dspex
from dspex.errors import SessionError, SessionNotFoundError

TARGET = Path(__file__).with_name("named_session_target.py")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    """One ``dspex serve`` (memory engine) for this module's tests."""
    with ServeProcess() as serve:
        yield serve


def _spawn(address: str, **options: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, str(TARGET), address, json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _run(address: str, **options: Any) -> dict[str, Any]:
    return _finish(_spawn(address, **options))


def _open_sessions(server: ServeProcess) -> set[str]:
    listed = run_dspex("sessions", "list", "--store", server.address, "--json")
    assert listed.returncode == 0, listed.stderr
    return {info["session_id"] for info in json.loads(listed.stdout)}


def test_a_named_session_created_from_python_outlives_its_process(server: ServeProcess) -> None:
    first = _run(server.address, session_id="support", create=True, set={"temperature": 0.3})
    assert first["session_id"] == "support"
    assert "support" in _open_sessions(server)  # kept after the creating process exited
    second = _run(server.address, session_id="support")  # a later process joins it
    assert second["variables"] == {"temperature": 0.3}
    assert "support" in _open_sessions(server)  # joining never closes it


def test_two_processes_create_or_join_one_session_at_once(server: ServeProcess) -> None:
    left = _spawn(server.address, session_id="pair", create=True, set={"a": 1.0}, expect=["b"])
    right = _spawn(server.address, session_id="pair", create=True, set={"b": 2.0}, expect=["a"])
    seen = [_finish(left), _finish(right)]
    assert [s["variables"] for s in seen] == [{"a": 1.0, "b": 2.0}] * 2
    assert "pair" in _open_sessions(server)


def test_keep_false_closes_a_named_session_and_keep_true_keeps_a_random_one(
    server: ServeProcess,
) -> None:
    _run(server.address, session_id="scratch", create=True)
    _run(server.address, session_id="scratch", keep=False)  # the last user closes it
    assert "scratch" not in _open_sessions(server)
    kept = _run(server.address, keep=True, set={"x": 1.0})  # random id, kept
    assert kept["session_id"] in _open_sessions(server)
    assert _run(server.address, session_id=kept["session_id"])["variables"] == {"x": 1.0}
    dropped = _run(server.address)  # random id, closed on exit as before
    assert dropped["session_id"] not in _open_sessions(server)


def test_joining_a_missing_session_says_how_to_create_it(server: ServeProcess) -> None:
    with pytest.raises(SessionNotFoundError, match="create=True"):
        dspex.Session(server.address, session_id="never-made")


def test_keep_without_a_store_is_refused() -> None:
    with pytest.raises(SessionError, match="needs a session store"):
        dspex.Session(keep=True)


def test_a_kept_session_with_a_ttl_expires_after_its_last_process_left() -> None:
    with ServeProcess("--session-ttl", "1") as server:
        _run(server.address, session_id="brief", create=True, set={"t": 0.5})
        deadline = time.monotonic() + 15
        while "brief" in _open_sessions(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "brief" not in _open_sessions(server)


def test_an_in_process_named_session_needs_no_keep() -> None:
    with dspex.Session(session_id="local-name", create=True) as session:
        assert session.session_id == "local-name"
        session.register("t", float, 0.1)
    assert session.closed
