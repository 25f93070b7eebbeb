"""The gRPC transport of a spawned fleet, measured on real processes: the voluntary context
switches of a worker and of a driver (from ``/proc``) while the driver sets a variable.

A hundred workers share two cores in the fleet benchmark, so every thread woken per update
delays the others. With gRPC's default transport a poller thread reads each socket and hands
each message over: about 4.5 switches per update in a worker instead of 1.3, and in a driver
whose embedded store serves 12 workers gRPC's EventEngine threads wake 19-20 times per set
instead of under 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import dspex
from dspex.remote._transport import GRPC_EXPERIMENTS_ENV

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


def voluntary_switches(pid: int, thread_name: str | None = None) -> int:
    """The voluntary context switches so far (each is a wake-up) of every thread of ``pid``,
    or of those named ``thread_name``."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread exited meanwhile
            continue
        if thread_name is None or name == thread_name:
            total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return total


def test_a_worker_wakes_about_one_thread_per_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GRPC_EXPERIMENTS_ENV, raising=False)  # the worker's own choice
    with dspex.Session() as session:
        session.register("temperature", float, 0.0, min=0.0, max=2.0)
        with dspex.Remote(Reader(), workers=1, timeout=60) as remote:
            _, pid, experiments = remote()
            assert experiments is None  # set only while gRPC initialized: nothing inherits it
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


DRIVER_WORKERS = 12

DRIVER = textwrap.dedent(
    f"""
    import os, sys, time
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    import dspex
    from test_remote_transport import Reader, voluntary_switches

    if __name__ == "__main__":
        with dspex.Session() as session:
            session.register("temperature", float, 0.0, min=0.0, max=2.0)
            with dspex.Remote(Reader(), workers={DRIVER_WORKERS}, timeout=60) as remote:
                remote.map([{{}}] * {DRIVER_WORKERS})
                before = voluntary_switches(os.getpid(), "event_engine")
                for step in range(1, {UPDATES} + 1):
                    session.set("temperature", round(step / 100, 2))
                    time.sleep(0.005)
                switches = voluntary_switches(os.getpid(), "event_engine") - before
                assert remote()[0] == round({UPDATES} / 100, 2)
        print(switches / {UPDATES}, os.environ.get("GRPC_EXPERIMENTS"))
    """
)


def test_a_driver_whose_remote_loads_grpc_serves_its_fleet_without_poller_threads(
    tmp_path: Path,
) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k != GRPC_EXPERIMENTS_ENV}
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=100, env=env,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    per_set, experiments = completed.stdout.split()
    assert experiments == "None"  # set only while gRPC initialized: workers do not inherit it
    assert float(per_set) < DRIVER_WORKERS / 2, f"{per_set} EventEngine wake-ups per set"
