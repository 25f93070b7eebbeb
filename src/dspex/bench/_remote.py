"""Benchmark suite ``remote``: fleet propagation and per-call overhead, spawn vs Ray vs in-process.

**Fleet propagation.** This process plays the optimizer: it sets ``temperature`` in its session,
then calls every worker once (a ``map`` of one call per worker). Each worker's call resolves the
variable the way a bound LM call does (one read from its watched cache, after catching up to the
revision the call carries) and returns the value and the moment it read it. The figure per
worker is that moment minus the moment of the set (one monotonic clock, one machine): the time
until the next call of every worker uses the new value. Each call then stays busy for
``LINGER`` seconds (after its read was timed) so that the round's calls land on every worker.
A call that read the old value counts as never having seen the new one (an infinite sample: a
p50/p99 it reaches is reported as None and misses the target), so no slow worker is left out.
p50/p99 over ``FLEET_ROUNDS`` rounds, for ``FLEET_SPAWN`` spawned workers and ``FLEET_RAY`` Ray
actors. The module is :class:`FleetProbe`, which imports neither DSPy nor ray, so a hundred
spawned workers stay light (their resident memory is reported too). Beside it, in the same run,
``*_dispatch_ms_p99``: the same round without a set (what reaching every worker costs at all),
and ``fleet_bare_ms_p50``/``_p99``: the same rounds over bare pipes to as many spawned processes
with no dspex in them (:mod:`dspex.bench._bare_fleet`), the floor of reaching a fleet on this
machine.

**Per-call overhead.** One call of a trivial module (:class:`Echo`) in process, through a
1-worker spawn Remote, through a 1-worker Ray Remote, and, as the baseline, a bare
``ray.get(actor.f.remote())`` on a plain actor of the same Ray instance; calls interleaved one by
one so all four see the same load. Target: the Ray Remote call within 1.3x the bare round trip.

Ray is started locally (2 CPUs, 150 MB object store, no dashboard), after the spawn fleet was
measured so that its processes do not share the cores with it, unless this process is already
connected or ``$RAY_ADDRESS`` names a cluster; without ray installed the Ray figures are
None.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

__all__ = ["TARGETS", "Echo", "FleetProbe", "run"]

FLEET_SPAWN: Final = int(os.environ.get("DSPEX_BENCH_FLEET", "100"))
"""Spawned workers in the fleet figure (``$DSPEX_BENCH_FLEET`` sets a smaller fleet, e.g. for
a quick check of the suite; the target is for 100)."""

FLEET_RAY: Final = 8
"""Ray actors in the fleet figure."""

FLEET_ROUNDS: Final = 5
"""Set-then-call rounds per fleet (each gives one sample per worker)."""

CALLS: Final = 300
"""Timed calls per path in the overhead figures (after ``WARMUP``)."""

WARMUP: Final = 30

LINGER: Final = 0.5
"""Seconds each fleet call stays busy after its read (timed before), so every worker gets one."""

_NEVER: Final = float("inf")
"""The sample of a call that read the old value: it never saw the new one."""

SETUP_TIMEOUT: Final = 600.0
"""Seconds a worker may take to start: a hundred spawns share two cores."""

TARGETS: Final[dict[str, tuple[str, Callable[[dict[str, Any]], bool]]]] = {
    "fleet_spawn_ms_p99": (
        "<= 50",
        lambda f: f["fleet_spawn_ms_p99"] is not None and f["fleet_spawn_ms_p99"] <= 50,
    ),
    "ray_call_us_p50": (
        "<= 1.3x ray_bare_call_us_p50",
        lambda f: (
            f["ray_call_us_p50"] is not None
            and f["ray_call_us_p50"] <= 1.3 * f["ray_bare_call_us_p50"]
        ),
    ),
}
"""Figure -> (target text, check over all figures) from the cluster issue."""


class FleetProbe:
    """What a bound LM call does with its variables: read them from the session, then call.

    Returns the temperature it read, the monotonic time it read it (nanoseconds) and its pid.
    """

    def __call__(self, linger: float = 0.0) -> tuple[float, int, int]:
        from dspex.session import current_session

        value = current_session().get("temperature")
        read_at = time.monotonic_ns()
        time.sleep(linger)  # stay busy, so the round's other calls go to the other workers
        return float(value), read_at, os.getpid()


class Echo:
    """The trivial module of the overhead figures: returns its argument."""

    def __call__(self, x: int) -> int:
        return x


class BareActor:
    """The baseline actor: one method, no dspex in the call path."""

    def f(self, x: int) -> int:
        return x


def run() -> dict[str, Any]:
    """Run the suite and return its figures."""
    # The spawn fleet first: a local Ray instance's own processes would share the two cores.
    figures = _fleet_figures("spawn", FLEET_SPAWN) | _bare_fleet_figures(FLEET_SPAWN)
    ray = _start_ray()
    try:
        if ray is None:
            figures |= {"fleet_ray_ms_p50": None, "fleet_ray_ms_p99": None}
        else:
            figures |= _fleet_figures("ray", FLEET_RAY)
        figures |= _overhead_figures(ray)
    finally:
        if ray is not None:
            ray.shutdown()
    return figures


def _start_ray() -> Any:
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        local = "RAY_ADDRESS" not in os.environ
        options: dict[str, Any] = {"log_to_driver": False}
        if local:
            options |= {
                "num_cpus": 2,
                "include_dashboard": False,
                "object_store_memory": 150 * 1024 * 1024,
            }
        ray.init(**options)
    return ray


def _fleet_figures(backend: str, workers: int) -> dict[str, Any]:
    """Fleet propagation on ``backend`` with ``workers`` workers (see the module docstring)."""
    from dspex.remote import Remote
    from dspex.session import Session

    with Session() as session:
        session.register("temperature", float, 0.0, min=0.0, max=2.0)
        started = time.perf_counter()
        with Remote(
            FleetProbe(), workers, backend=backend,  # type: ignore[arg-type]
            setup_timeout=SETUP_TIMEOUT, timeout=120,
        ) as remote:  # fmt: skip
            start_s = time.perf_counter() - started
            rss = _rss_mb(remote.pids)  # Ray actors too, when they run on this machine
            calls = [{"linger": LINGER}] * workers
            remote.map(calls, progress=False)  # warm: every worker has taken a call
            seen: list[float] = []
            dispatch: list[float] = []
            reached: list[int] = []
            for step in range(1, FLEET_ROUNDS + 1):
                value = round(0.1 * step, 2)
                t0 = time.monotonic_ns()
                session.set("temperature", value)
                results = remote.map(calls, progress=False)
                seen += [(at - t0) / 1e6 if got == value else _NEVER for got, at, _ in results]
                reached.append(len({pid for _, _, pid in results}))
                t0 = time.monotonic_ns()
                dispatch += [(at - t0) / 1e6 for _, at, _ in remote.map(calls, progress=False)]
    prefix = f"fleet_{backend}"
    figures: dict[str, Any] = {
        f"{prefix}_workers": workers,
        f"{prefix}_ms_p50": _ms(statistics.median(seen)),
        f"{prefix}_ms_p99": _ms(_p99(seen)),
        f"{prefix}_dispatch_ms_p99": _ms(_p99(dispatch)),
        f"{prefix}_stale_reads": seen.count(_NEVER),
        f"{prefix}_workers_called_min": min(reached),
        f"{prefix}_start_s": round(start_s, 2),
    }
    return figures | {f"{prefix}_worker_rss_mb_avg": rss[0], f"{prefix}_workers_rss_mb": rss[1]}


def _bare_fleet_figures(workers: int) -> dict[str, Any]:
    """The fleet rounds over bare pipes (the baseline of the spawn fleet figure)."""
    from dspex.bench._bare_fleet import BareFleet

    with BareFleet(workers) as fleet:
        fleet.round(LINGER)  # warm, as the fleet's first map
        seen = [ms for _ in range(FLEET_ROUNDS) for ms in fleet.round(LINGER)]
    return {
        "fleet_bare_ms_p50": _ms(statistics.median(seen)),
        "fleet_bare_ms_p99": _ms(_p99(seen)),
    }


def _overhead_figures(ray: Any) -> dict[str, Any]:
    """Per-call p50 of a trivial module: in process, spawn, Ray, and a bare Ray round trip."""
    from dspex.remote import Remote
    from dspex.session import Session

    module = Echo()
    # Two sessions: a session promoted for spawned workers (unix socket) stays on this machine.
    with Session(), Remote(module, 1, setup_timeout=SETUP_TIMEOUT) as spawned, Session():
        calls: dict[str, Callable[[], Any]] = {
            "inprocess": lambda: module(x=1),
            "spawn": lambda: spawned(x=1),
        }
        if ray is None:
            samples = _time_calls(calls)
        else:
            bare = ray.remote(BareActor).options(num_cpus=0).remote()
            on_ray = Remote(module, 1, backend="ray", setup_timeout=SETUP_TIMEOUT)
            try:
                calls |= {
                    "ray": lambda: on_ray(x=1),
                    "ray_bare": lambda: ray.get(bare.f.remote(1)),
                }
                samples = _time_calls(calls)
            finally:
                on_ray.close()
                ray.kill(bare)
    p50 = {key: round(statistics.median(values), 1) for key, values in samples.items()}
    return {
        "inprocess_call_us_p50": p50["inprocess"],
        "spawn_call_us_p50": p50["spawn"],
        "ray_call_us_p50": p50.get("ray"),
        "ray_bare_call_us_p50": p50.get("ray_bare"),
        "ray_to_bare_ratio": (round(p50["ray"] / p50["ray_bare"], 3) if "ray" in p50 else None),
        "overhead_path": (
            "Echo()(x=1): in process; dspex.Remote(Echo(), 1)(x=1) on spawn and on Ray; "
            "baseline ray.get(actor.f.remote(1)) on a plain actor; interleaved, p50 of "
            f"{CALLS} calls each"
        ),
    }


def _time_calls(calls: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    for call in calls.values():
        for _ in range(WARMUP):
            call()
    samples: dict[str, list[float]] = {key: [] for key in calls}
    clock = time.perf_counter_ns
    for _ in range(CALLS):
        for key, call in calls.items():
            start = clock()
            call()
            samples[key].append((clock() - start) / 1000)
    return samples


def _ms(value: float) -> float | None:
    """A figure in ms for the JSON; None for a percentile that reached a stale read."""
    return None if value == _NEVER else round(value, 3)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _rss_mb(pids: list[int | None]) -> tuple[float | None, float | None]:
    """Average and total resident memory (MB) of the given processes, from /proc.

    None when none of them runs on this machine (Ray actors on other nodes).
    """
    sizes = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    if not sizes:
        return None, None
    return round(sum(sizes) / len(sizes), 1), round(sum(sizes), 1)
