"""``dspex.Remote`` workers under faults of the processes around them: the parent killed with
``kill -9`` while every worker is in the middle of a long call.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.faults import WAIT, record_figures

pytestmark = pytest.mark.timeout(90)

PARENT = str(Path(__file__).with_name("remote_parent.py"))
GONE_WITHIN = 5.0
"""Seconds orphaned workers may take to notice their parent died and exit."""


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
