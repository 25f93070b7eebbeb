"""What a spawned ``dspex.Remote`` worker costs per update it receives, measured on the real
process: its threads' context switches from ``/proc`` while the parent sets a variable.

A hundred workers share two cores in the fleet benchmark, so every thread a worker wakes per
update delays the others. The worker's store stream is read by one thread that polls its own
socket (gRPC's ``-event_engine_client``); with gRPC's default transport a poller thread reads
the socket and hands each message over, about 5 switches per update instead of under 2.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

import dspex
from dspex.remote._worker import GRPC_EXPERIMENTS_ENV, READER_POLLS

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

UPDATES = 150
"""Sets counted (paced, so the store sends each one alone rather than coalescing them)."""


class Reader:
    """Reads the temperature; reports its process and the gRPC experiments it runs with."""

    def __call__(self) -> tuple[float, int, str | None]:
        value = dspex.current_session().get("temperature")
        return float(value), os.getpid(), os.environ.get(GRPC_EXPERIMENTS_ENV)


def voluntary_switches(pid: int) -> int:
    """The voluntary context switches of every thread of ``pid`` so far (each is a wake-up)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread exited meanwhile
            continue
        total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return total


def test_a_worker_wakes_about_one_thread_per_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GRPC_EXPERIMENTS_ENV, raising=False)  # the worker's own choice
    with dspex.Session() as session:
        session.register("temperature", float, 0.0, min=0.0, max=2.0)
        with dspex.Remote(Reader(), workers=1, timeout=60) as remote:
            _, pid, experiments = remote()
            assert experiments == READER_POLLS
            before = voluntary_switches(pid)
            for step in range(1, UPDATES + 1):
                session.set("temperature", round(step / 100, 2))
                time.sleep(0.005)
            value, _, _ = remote()  # the worker applied every set before this call
            switches = voluntary_switches(pid) - before
    assert value == round(UPDATES / 100, 2)
    assert switches / UPDATES < 3.0, f"{switches / UPDATES:.1f} wake-ups per update"


def test_a_worker_keeps_the_grpc_experiments_its_environment_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(GRPC_EXPERIMENTS_ENV, "")  # spawned workers inherit the environment
    with dspex.Session() as session:
        session.register("temperature", float, 0.5)
        with dspex.Remote(Reader(), workers=1, timeout=60) as remote:
            assert remote() == (0.5, remote.pids[0], "")
