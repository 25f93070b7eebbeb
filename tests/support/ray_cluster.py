"""A two-node Ray cluster on loopback, started with the real ``ray start`` CLI, for the tests.

The head (1 CPU, with the dashboard) and a second node (2 CPUs and a custom ``dspex_node2``
resource) are separate ``ray start`` process trees sharing one private temp dir. Every port is
chosen free up front, so the cluster never collides with another Ray instance on the machine,
and a short GCS health check makes a killed node be declared dead within seconds. ``stop()``
ends exactly the processes of this cluster (found by its temp dir), never ``ray stop``, which
would stop every Ray instance of the user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from support.redis_server import free_port

RAY = str(Path(sys.executable).with_name("ray"))
SRC = Path(__file__).resolve().parents[2] / "src"
RAY_TESTS = Path(__file__).resolve().parents[1] / "ray"
"""The folder of the programs the actors run (``backend_targets``), on the nodes' path."""
OBJECT_STORE = str(100 * 1024 * 1024)
SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


def _processes() -> list[tuple[int, list[str]]]:
    """``(pid, argv)`` of every process (read from /proc), except this one."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        if argv:
            found.append((int(entry.name), argv))
    return found


def _node_ports() -> list[str]:
    names = (
        "object-manager-port",
        "node-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
    )
    return [f"--{name}={free_port()}" for name in names]


STARTUP_TIMED_OUT = "timed out during startup"
"""What Ray says when a node did not register with the GCS within Ray's fixed 30 s, which
happens on a loaded 2-core machine (a CI run beside other work)."""

T = TypeVar("T")


def started_despite_slow_nodes(
    start: Callable[[], T], clean_up: Callable[[], None], attempts: int = 3
) -> T:
    """``start()``; a start that Ray itself timed out is cleaned up and tried again, any
    other failure is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except Exception as exc:
            clean_up()
            if attempt == attempts or STARTUP_TIMED_OUT not in str(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


class RayCluster:
    """Start with :meth:`start` (or :meth:`started`); ``address``, ``dashboard`` and
    ``node2_manager_port`` after."""

    @classmethod
    def started(cls) -> RayCluster:
        """A started cluster; one whose start Ray timed out is stopped and a new one (fresh
        ports, fresh temp dir) started instead."""
        made: list[RayCluster] = []

        def start() -> RayCluster:
            made.append(cls())
            return made[-1].start()

        def stop_last() -> None:  # the cluster of the attempt that failed
            made[-1].stop()

        return started_despite_slow_nodes(start, stop_last)

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="dxray-", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_port = free_port()
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.node2_ports = _node_ports()
        self.node2_manager_port = int(self.node2_ports[1].split("=")[1])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(RAY_TESTS)])
        self.env["RAY_AUTH_MODE"] = "disabled"  # loopback only; no shared token file

    def start(self) -> RayCluster:
        common = ["--node-ip-address=127.0.0.1", f"--object-store-memory={OBJECT_STORE}"]
        self._ray(
            "start", "--head", f"--port={self.port}", "--num-cpus=1", *common,
            f"--temp-dir={self.temp_dir}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}", "--disable-usage-stats",
            f"--system-config={json.dumps(SYSTEM_CONFIG)}", *_node_ports(),
        )  # fmt: skip
        self.start_node2()
        return self

    def start_node2(self) -> None:
        """Join the second node (2 CPUs, ``dspex_node2``: 8)."""
        self._ray(
            "start", f"--address={self.address}", "--num-cpus=2",
            "--node-ip-address=127.0.0.1", f"--object-store-memory={OBJECT_STORE}",
            '--resources={"dspex_node2": 8}', "--disable-usage-stats", *self.node2_ports,
        )  # fmt: skip

    def node2_raylet(self) -> int:
        """The process id of the second node's raylet."""
        flag = f"--node_manager_port={self.node2_manager_port}"
        for pid, argv in _processes():
            if flag in argv and argv[0].endswith("raylet"):
                return pid
        raise LookupError("the second node's raylet is not running")

    def stop(self) -> None:
        """Kill every process of this cluster and remove its temp dir."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            mine = [pid for pid, argv in _processes() if self._owns(argv)]
            if not mine:
                break
            for pid in mine:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.2)
        for _ in range(10):  # a dying process may still write a last log line
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            if not os.path.exists(self.temp_dir):
                break
            time.sleep(0.5)

    def _owns(self, argv: list[str]) -> bool:
        """Whether a command line belongs to this cluster (its temp dir or GCS address)."""
        text = " ".join(argv)
        return self.temp_dir in text or f"127.0.0.1:{self.port}" in text

    def _ray(self, *args: str) -> None:
        completed = subprocess.run(
            [RAY, *args], env=self.env, capture_output=True, text=True, timeout=180, check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(f"ray {args[0]} failed:\n{completed.stdout}\n{completed.stderr}")

    def wait_nodes(self, ray: Any, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for node in ray.nodes() if node["Alive"]) >= count:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{count} Ray nodes were not alive within {timeout}s")
