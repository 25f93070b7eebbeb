"""Fixtures for the Ray backend tests: one small local Ray instance per test module.

``backend`` runs a test once on spawned workers and once on Ray actors. The local Ray instance
(2 CPUs, a custom resource, 100 MB object store, no dashboard) is started the first time a
module needs it and shut down after the module; its workers find this folder's modules through
the job's code search path, as a real cluster finds installed code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.ray_cluster import started_despite_slow_nodes

import dspex

HERE = Path(__file__).resolve().parent

# Every Ray instance of these tests is on loopback and ours: no Ray token authentication. It is
# also the same for all of them, as Ray requires of one process: after a local instance with
# token auth (Ray's default for local instances), actors of a cluster started without it die
# before they run.
os.environ["RAY_AUTH_MODE"] = "disabled"


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> None:
    """Every test here starts with clean DSPy settings and no current session."""


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A local Ray instance for this module (shut down after it)."""
    ray = pytest.importorskip("ray")
    from ray.job_config import JobConfig

    if ray.is_initialized():
        ray.shutdown()
    started_despite_slow_nodes(
        lambda: ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 1024 * 1024,
            resources={"dspex_test_slot": 4},
            log_to_driver=False,
            job_config=JobConfig(code_search_path=[str(HERE)]),
        ),
        ray.shutdown,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(params=["spawn", "ray"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each test taking ``backend`` runs on spawned workers and on Ray actors."""
    if request.param == "ray":
        request.getfixturevalue("local_ray")
    return str(request.param)


@pytest.fixture
def session() -> Iterator[dspex.Session]:
    """An active in-process session (closed, with anything it started, after the test)."""
    with dspex.Session() as active:
        yield active
