"""Benchmark suite ``local``: in-process get, validated set and watch delivery, beside dicts.

Every figure is measured in the same run, interleaved batch by batch, so the dict baseline and
the dspex figure see the same machine load. A batch times 1000 calls (ten per loop iteration,
so loop overhead is a tenth of a bytecode per call) with ``perf_counter_ns`` and divides; p50
and p99 are taken over the batches, so timer overhead never dominates a nanosecond figure.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from dspex.session import Session
from dspex.state import VariableWatch

__all__ = ["TARGETS", "run"]

BATCHES: Final = 1000
"""Timed batches per figure (p99 needs a few hundred)."""

CALLS_PER_BATCH: Final = 1000
"""Calls per timed batch: 100 loop iterations of 10 unrolled calls."""

WATCH_SAMPLES: Final = 1000
"""Single set-to-arrival samples for the watch delivery figure."""

GET_PATH: Final = "session.get(name): Session -> LocalProvider.get_variable -> record.value"
SET_PATH: Final = (
    "session.set(name, value): float with min/max, history on (100 kept), no watchers"
)

TARGETS: Final[dict[str, tuple[str, Callable[[dict[str, Any]], bool]]]] = {
    "local_get_ns_p50": (
        "<= 300 ns and <= 10x dict_get_ns",
        lambda f: f["local_get_ns_p50"] <= 300 and f["local_get_ns_p50"] <= 10 * f["dict_get_ns"],
    ),
    "local_set_ns_p50": ("<= 2000 ns", lambda f: f["local_set_ns_p50"] <= 2000),
}
"""Figure -> (target text, check over all figures) from the foundation issue."""


# Ten calls per iteration, written out: a loop per call would add its own overhead.


def _dict_gets(table: dict[str, float], name: str, rounds: range) -> int:
    start = time.perf_counter_ns()
    for _ in rounds:
        table[name]  # the bare lookups are what is timed
        table[name]
        table[name]
        table[name]
        table[name]
        table[name]
        table[name]
        table[name]
        table[name]
        table[name]
    return time.perf_counter_ns() - start


def _dict_sets(table: dict[str, float], name: str, rounds: range) -> int:
    start = time.perf_counter_ns()
    for _ in rounds:
        table[name] = 0.5
        table[name] = 0.6
        table[name] = 0.5
        table[name] = 0.6
        table[name] = 0.5
        table[name] = 0.6
        table[name] = 0.5
        table[name] = 0.6
        table[name] = 0.5
        table[name] = 0.6
    return time.perf_counter_ns() - start


def _session_gets(get: Callable[[str], Any], name: str, rounds: range) -> int:
    start = time.perf_counter_ns()
    for _ in rounds:
        get(name)
        get(name)
        get(name)
        get(name)
        get(name)
        get(name)
        get(name)
        get(name)
        get(name)
        get(name)
    return time.perf_counter_ns() - start


def _session_sets(set_: Callable[[str, Any], Any], name: str, rounds: range) -> int:
    start = time.perf_counter_ns()
    for _ in rounds:
        set_(name, 0.5)
        set_(name, 0.6)
        set_(name, 0.5)
        set_(name, 0.6)
        set_(name, 0.5)
        set_(name, 0.6)
        set_(name, 0.5)
        set_(name, 0.6)
        set_(name, 0.5)
        set_(name, 0.6)
    return time.perf_counter_ns() - start


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _measure_calls(session: Session) -> dict[str, list[float]]:
    """Interleave one batch of each operation per round; return per-call ns per batch."""
    table = {"temperature": 0.7}
    rounds = range(CALLS_PER_BATCH // 10)
    timers: dict[str, Callable[[], int]] = {
        "dict_get": lambda: _dict_gets(table, "temperature", rounds),
        "dict_set": lambda: _dict_sets(table, "temperature", rounds),
        "local_get": lambda: _session_gets(session.get, "temperature", rounds),
        "local_set": lambda: _session_sets(session.set, "temperature", rounds),
    }
    for timer in timers.values():  # warm up caches and specializations
        timer()
    samples: dict[str, list[float]] = {key: [] for key in timers}
    for _ in range(BATCHES):
        for key, timer in timers.items():
            samples[key].append(timer() / CALLS_PER_BATCH)
    return samples


def _measure_watch_delivery(session: Session) -> list[float]:
    """Nanoseconds from just before ``set`` to the update's arrival in a watcher thread."""
    arrived: dict[int, int] = {}
    signal = threading.Event()
    ready = threading.Event()
    watch: VariableWatch = session.watch("temperature")

    def watcher() -> None:
        ready.set()
        for update in watch:
            arrived[update.revision] = time.perf_counter_ns()
            signal.set()

    thread = threading.Thread(target=watcher, name="dspex-bench-watcher", daemon=True)
    thread.start()
    ready.wait(10)
    latencies: list[float] = []
    try:
        for index in range(WATCH_SAMPLES):
            signal.clear()
            start = time.perf_counter_ns()
            record = session.set("temperature", 0.5 if index % 2 else 0.6)
            if not signal.wait(10):
                break
            latencies.append(arrived[record.revision] - start)
    finally:
        watch.cancel()
        thread.join(10)
    return latencies


def run() -> dict[str, Any]:
    """Run the suite and return its figures (nanoseconds unless named otherwise)."""
    with Session() as session:
        session.register("temperature", float, 0.7, min=0.0, max=2.0)
        samples = _measure_calls(session)
        delivery = _measure_watch_delivery(session)
    dict_get = statistics.median(samples["dict_get"])
    local_get_p50 = _percentile(samples["local_get"], 0.50)
    return {
        "dict_get_ns": round(dict_get, 1),
        "dict_set_ns": round(statistics.median(samples["dict_set"]), 1),
        "local_get_ns_p50": round(local_get_p50, 1),
        "local_get_ns_p99": round(_percentile(samples["local_get"], 0.99), 1),
        "local_set_ns_p50": round(_percentile(samples["local_set"], 0.50), 1),
        "local_set_ns_p99": round(_percentile(samples["local_set"], 0.99), 1),
        "local_watch_delivery_ns_p50": round(statistics.median(delivery)) if delivery else None,
        "local_get_to_dict_ratio": round(local_get_p50 / dict_get, 2) if dict_get else None,
        "local_get_path": GET_PATH,
        "local_set_path": SET_PATH,
        "local_batches": BATCHES,
        "local_calls_per_batch": CALLS_PER_BATCH,
        "local_watch_samples": len(delivery),
    }
