"""A watcher process that stops reading (SIGSTOP) while its session changes fast: the store
ends its stream with ``watch_lagged`` and a ``resume_from`` it can resume from, or delivers
every change in order, but never buffers without bound, never skips silently, and never holds
back another watcher of the same session. (The server's memory growth is recorded as a figure,
not asserted: the change log keeps these writes anyway.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.faults import TEXT, WAIT, record_figures
from support.serve_process import ServeProcess

from dspex import errors
from dspex.state import VariableWatch
from dspex.state.store import SessionStoreProvider

pytestmark = pytest.mark.timeout(120)

WATCHER = str(Path(__file__).with_name("stalled_watcher.py"))
WRITES = 3000
VALUE = "v" * 2048
QUEUE = "200"
"""The server's ``--watch-queue-size``: a stream further behind than this lags."""


def _rss(pid: int) -> int:
    """Resident bytes of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _catch_up(watch: VariableWatch, revision: int) -> float:
    """Seconds ``watch`` took to deliver ``revision`` (within :data:`WAIT`)."""
    started = time.monotonic()
    while True:
        update = watch.poll(timeout=max(0.0, started + WAIT - time.monotonic()))
        assert update is not None, f"the other watcher was held back before revision {revision}"
        if update.revision >= revision:
            return time.monotonic() - started


def test_a_stopped_watcher_lags_explicitly_and_holds_nobody_back() -> None:
    with ServeProcess("--watch-queue-size", QUEUE) as server:
        assert server.process is not None
        client = SessionStoreProvider(server.address, timeout=10.0)
        client.create_session("s")
        first = client.register_variable("s", "x", TEXT, "0").revision
        stopped = subprocess.Popen(
            [sys.executable, WATCHER, server.address, "s"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert stopped.stdout is not None
            assert stopped.stdout.readline().strip() == "WATCHING", stopped.stderr
            fast = client.watch_variables("s", after_revision=first)
            stopped.send_signal(signal.SIGSTOP)
            before = _rss(server.process.pid)
            slowest = 0.0
            for value in range(WRITES):
                last = client.set_variable("s", "x", f"{value}{VALUE}").revision
                if value % 100 == 99:  # the other watcher keeps up all along
                    slowest = max(slowest, _catch_up(fast, last))
            growth = _rss(server.process.pid) - before
            stopped.send_signal(signal.SIGCONT)
            done = client.register_variable("s", "done", TEXT, "yes").revision
            out, err = stopped.communicate(timeout=WAIT)
        finally:
            stopped.send_signal(signal.SIGCONT)
            if stopped.poll() is None:
                stopped.kill()
                stopped.communicate(timeout=WAIT)
            client.close()
        lines = out.splitlines()
        assert lines and lines[0].startswith("GOT"), err
        _, count, _first, covered, in_order = lines[0].split()
        assert in_order == "True", out  # never a silent skip
        if len(lines) > 1:  # ended: explicit lag, resumable from what it got
            _, kind, resume_from = lines[1].split()
            assert kind == errors.WatchLaggedError.__name__, out
            assert int(resume_from) == int(covered), out
        else:
            assert int(covered) == done, out  # or every change, in order
        record_figures(
            "slow_watcher_sigstop", writes=WRITES, delivered_before_end=int(count),
            lagged=len(lines) > 1, other_watcher_slowest_catch_up_s=round(slowest, 2),
            server_growth_mib=round(growth / 2**20, 1),
        )  # fmt: skip
