"""Two Ray nodes on one machine (``ray start --head`` + ``ray start --address=...`` on loopback).

Actors are placed on the second node through its custom resource, read and write the session
and see live sets; the store token shows up nowhere in Ray's dashboard or logs; killing the
second node's raylet fails calls cleanly with ``WorkerCrashedError`` (never a hang).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import backend_targets
import pytest
from support.ray_cluster import RayCluster

import dspex
from dspex.errors import WorkerCrashedError, WorkerError

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

ON_NODE2 = {"num_cpus": 0.5, "resources": {"dspex_node2": 1}}
"""Actor options placing actors on the second node (which has 2 CPUs)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[RayCluster, Any]]:
    """The two-node cluster, this process connected to it as the driver."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    cluster = RayCluster.started()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_nodes(ray, 2)
        yield cluster, ray
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()


def node2_id(ray: Any, cluster: RayCluster) -> str:
    [node] = [n for n in ray.nodes() if n["NodeManagerPort"] == cluster.node2_manager_port]
    return str(node["NodeID"])


def test_actors_on_the_second_node_read_write_and_see_live_sets(
    cluster: tuple[RayCluster, Any], session: dspex.Session
) -> None:
    ray_cluster, ray = cluster
    from ray.util.state import list_actors

    with (
        dspex.Remote(
            backend_targets.Probe(), workers=2, backend="ray", actor_options=ON_NODE2,
            setup_timeout=120, timeout=60,
        ) as readers,
        dspex.Remote(
            backend_targets.Writer(), workers=1, backend="ray", actor_options=ON_NODE2,
            setup_timeout=120,
        ) as writer,
    ):  # fmt: skip
        alive = list_actors(filters=[("class_name", "=", "RayWorker"), ("state", "=", "ALIVE")])
        assert {actor.node_id for actor in alive} == {node2_id(ray, ray_cluster)}
        assert sorted(actor.pid for actor in alive) == sorted([*readers.pids, *writer.pids])
        for step in range(5):
            value = round(0.3 * step, 2)
            session.set("temperature", value)  # a live set in the driver ...
            seen = readers.map([{"question": "What is 2 + 2?"}] * 4, progress=False)
            assert {p.read_temperature for p in seen} == {value}  # ... seen by every actor
            assert {p.lm_call["temperature"] for p in seen} == {value}
        assert writer(name="temperature", value=1.7).read == 1.7  # an actor writes ...
        assert session.get("temperature") == 1.7  # ... the driver sees it
        assert {p.read_temperature for p in readers.map([{"question": "q"}] * 4)} == {1.7}
        token = session.store_token
        assert token
        _assert_token_not_shown(token, ray_cluster)


def _assert_token_not_shown(token: str, cluster: RayCluster) -> None:
    """Neither the dashboard's state API nor any Ray log or session file holds the token."""
    from ray.util.state import list_actors, list_jobs, list_tasks, list_workers

    shown = [
        repr(list_actors(detail=True)),
        repr(list_tasks(detail=True)),
        repr(list_jobs(detail=True)),
        repr(list_workers(detail=True)),
    ]
    assert "RayWorker" in shown[0]
    assert all(token not in text for text in shown)
    for path in Path(cluster.temp_dir).rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 50_000_000:
            assert token.encode() not in path.read_bytes(), f"the token is in {path}"


def test_killing_the_second_nodes_raylet_fails_calls_cleanly(
    cluster: tuple[RayCluster, Any], session: dspex.Session
) -> None:
    ray_cluster, _ray = cluster
    pool = dspex.Remote(
        backend_targets.Sleepy(), workers=1, backend="ray", actor_options=ON_NODE2,
        setup_timeout=15, retries=1,
    )  # fmt: skip
    with pool:
        assert pool(seconds=0).pid == pool.pids[0]
        outcome: list[BaseException | Any] = []
        running = threading.Thread(target=lambda: outcome.append(_outcome(pool, seconds=600)))
        running.start()
        time.sleep(1.0)  # the call is running on the second node
        started = time.monotonic()
        os.kill(ray_cluster.node2_raylet(), signal.SIGKILL)
        running.join(120)
        assert not running.is_alive(), "a call hangs after its node died"
        [error] = outcome
        assert isinstance(error, WorkerCrashedError), error
        assert time.monotonic() - started < 120
        # The node is gone and no other node offers its resource: later calls fail as cleanly.
        with pytest.raises(WorkerError):
            pool(seconds=0)


def _outcome(pool: dspex.Remote, **kwargs: Any) -> Any:
    try:
        return pool(**kwargs)
    except BaseException as exc:
        return exc
