"""``dspex.Remote`` workers under faults of the processes around them: the parent killed with
``kill -9`` while every worker is in the middle of a long call; the session's ``dspex serve``
store killed and restarted while a map runs; a worker stopped (SIGSTOP) mid-call or while idle;
``close()`` from another thread while a map runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fault_targets import ReadsX, SleepsLong
from support.faults import WAIT, record_figures
from support.serve_process import ServeProcess

import dspex
from dspex import errors

pytestmark = pytest.mark.timeout(90)

PARENT = str(Path(__file__).with_name("remote_parent.py"))
GONE_WITHIN = 5.0
"""Seconds orphaned workers may take to notice their parent died and exit."""
FOUND_WITHIN = 4.0
"""Seconds the workers may take to reach a restarted store (its reconnect backoff is 1 s;
they took 6.5-8.3 s before their clients kept polling a channel that lost the store)."""
DOWN = 1.0
"""Seconds the store stays down."""
STOPPED_TIMEOUT = 5.0
"""The call timeout of the Remote whose worker is stopped (its calls sleep 0.2 s)."""

_T = TypeVar("_T")


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_busy_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    parent = subprocess.Popen(
        [sys.executable, PARENT, str(markers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()  # printed once both workers run their long call
        assert line, parent.stderr.read() if parent.stderr else "no output"
        pids = [int(pid) for pid in line.split()]
        assert sorted(pids) == sorted(int(path.name) for path in markers.iterdir())
        parent.send_signal(signal.SIGKILL)
        parent.wait(WAIT)
        killed = time.monotonic()
        while (left := [pid for pid in pids if _running(pid)]) and (
            time.monotonic() - killed < GONE_WITHIN
        ):
            time.sleep(0.05)
        assert not left, f"workers {left} still run {GONE_WITHIN}s after their parent died"
        record_figures(
            "remote_parent_killed", workers=len(pids),
            exited_within_s=round(time.monotonic() - killed, 2),
        )  # fmt: skip
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(WAIT)
        for pid in pids:  # never leave an orphan behind, even when the test failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _until_reachable(call: Callable[[], _T]) -> _T:
    """``call()``, retried while the store is unreachable (a refused call was never sent)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return call()
        except errors.StoreUnavailableError:
            assert time.monotonic() < deadline, "the store was never reachable again"
            time.sleep(0.05)


def _is_store_failure(result: Any, address: str) -> bool:
    """Whether a map slot holds the clear failure of a call that found the store gone."""
    return isinstance(result, errors.StoreUnavailableError) and address in str(result)


def test_a_map_across_a_store_restart_fails_clearly_then_reads_new_values(
    tmp_path: Path,
) -> None:
    server = ServeProcess("--data", str(tmp_path / "data")).start()
    try:
        with (
            dspex.Session(store=server.address) as session,
            dspex.Remote(ReadsX(), workers=2, timeout=60, progress=False) as remote,
        ):
            session.register("x", int, 1)
            assert [result["x"] for result in remote.map([{}] * 4)] == [1] * 4
            running: list[list[Any]] = []
            mapping = threading.Thread(
                target=lambda: running.append(
                    remote.map([{"seconds": 0.05}] * 60, return_exceptions=True)
                )
            )
            mapping.start()
            time.sleep(0.5)
            server.kill()
            time.sleep(DOWN)
            server.start()
            listening = time.monotonic()
            _until_reachable(lambda: session.set("x", 2))
            mapping.join(WAIT)
            assert running, "the map across the restart never returned"
            for result in running[0]:  # a value, or a failure that names the store
                assert _is_store_failure(result, server.address) or result["x"] in (1, 2), result
            failed = sum(isinstance(result, Exception) for result in running[0])
            while True:  # from now on every call reads 2, once the workers reach the store
                results = remote.map([{}] * 4, return_exceptions=True)
                values = [result["x"] for result in results if isinstance(result, dict)]
                assert 1 not in values, "a worker read the value from before the restart"
                assert all(_is_store_failure(result, server.address) or isinstance(result, dict)
                           for result in results)  # fmt: skip
                if values == [2] * 4:
                    break
                found_after = time.monotonic() - listening
                assert found_after < FOUND_WITHIN, f"workers still fail {found_after:.1f} s on"
                time.sleep(0.05)
        record_figures(
            "remote_store_restart", down_s=DOWN, calls=60, failed_clearly=failed,
            stale_reads=0, found_again_s=round(time.monotonic() - listening, 2),
        )  # fmt: skip
    finally:
        server.kill()


def _wait_for_markers(markers: Path, count: int) -> list[int]:
    """The pids of the first ``count`` workers that started a :class:`SleepsLong` call."""
    deadline = time.monotonic() + WAIT
    while len(found := list(markers.iterdir())) < count:
        assert time.monotonic() < deadline, "the calls never started"
        time.sleep(0.02)
    return [int(path.name) for path in found]


def test_a_stopped_worker_times_out_is_replaced_and_close_does_not_hang(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with (
        dspex.Session(),
        dspex.Remote(SleepsLong(), workers=2, timeout=3.0, progress=False) as remote,
    ):
        pids = list(remote.pids)
        running: list[list[Any]] = []
        calls = [{"markers": str(markers), "seconds": 1.0}] * 2
        mapping = threading.Thread(
            target=lambda: running.append(remote.map(calls, return_exceptions=True))
        )
        mapping.start()
        victim = _wait_for_markers(markers, 1)[0]
        os.kill(victim, signal.SIGSTOP)  # mid-call: it can neither answer nor exit
        mapping.join(WAIT)
        assert running, "the map never returned"
        [timed_out] = [result for result in running[0] if isinstance(result, Exception)]
        assert isinstance(timed_out, errors.WorkerTimeoutError), timed_out
        assert f"pid {victim}" in str(timed_out)
        assert [result for result in running[0] if not isinstance(result, Exception)] == [
            pid for pid in pids if pid != victim
        ]
        deadline = time.monotonic() + WAIT
        while _running(victim) or victim in remote.pids or None in remote.pids:
            assert time.monotonic() < deadline, f"{victim} not killed and replaced: {remote.pids}"
            time.sleep(0.05)
        for path in markers.iterdir():
            path.unlink()
        idle = [pid for pid in remote.pids if pid is not None]
        os.kill(idle[0], signal.SIGSTOP)  # stopped while idle: ignores the stop message
        started = time.monotonic()
        remote.close(grace=0.5)
        took = time.monotonic() - started
    assert took < 0.5 + 2.0 + 2.0, f"close took {took:.1f} s with a stopped worker"
    assert not any(_running(pid) for pid in idle)
    record_figures("remote_stopped_worker", timeout_s=STOPPED_TIMEOUT, close_s=round(took, 2))


def test_close_during_a_map_fails_its_calls_and_leaves_no_worker(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with dspex.Session():
        remote = dspex.Remote(SleepsLong(), workers=2, progress=False)
        pids = list(remote.pids)
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                remote.map([{"markers": str(markers), "seconds": 60.0}] * 4)
            except BaseException as exc:  # the map must end, with an error
                outcome.append(exc)

        mapping = threading.Thread(target=run)
        mapping.start()
        _wait_for_markers(markers, 2)
        stopped = _wait_for_markers(markers, 1)[0]
        os.kill(stopped, signal.SIGSTOP)  # one busy worker cannot even be terminated
        remote.close(grace=0.5)
        mapping.join(WAIT)
    assert not mapping.is_alive(), "the map is still blocked after close()"
    [error] = outcome
    assert isinstance(error, errors.WorkerError) and "closed" in str(error), error
    assert not any(_running(pid) for pid in pids if pid is not None)
    with pytest.raises(errors.WorkerError, match="closed"):
        remote.map([{"markers": str(markers)}])
