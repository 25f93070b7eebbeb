"""``dspex bench bridge``: the gRPC bridge measured beside a raw gRPC echo in the same run.

A store server runs in a spawned process on loopback TCP (so client and server do not share a
GIL); every figure uses that same kind of channel:

* ``grpc_echo_us_p50``: the Ping RPC, a unary echo through the same server and channel, timed
  interleaved with ``bridged_get`` so both see the same machine load;
* ``bridged_get_us_p50/p99``, ``bridged_set_us_p50``: SessionStoreProvider calls;
* ``cached_get_ns_p50``: a hot ``SessionContext.get`` through ``SessionContext.connect`` (the
  watch-coherent cache);
* ``batch100_speedup``: 100 single sets divided by one 100-variable ``update_variables``;
* ``watch_delivery_us_p50/p99``: from a set to receipt by 1 watcher;
* ``watch_last_of_100_us_p99``: from a set to receipt by the last of 100 watchers (4 spawned
  processes of 25 watches each);
* ``redis_get_us_p50``: redis-py GET against a local ``redis-server`` (None without the binary).
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

__all__ = ["TARGETS", "run"]

SAMPLES: Final = 2000
WATCH_SAMPLES: Final = 300
FANOUT_SAMPLES: Final = 150
FANOUT_PROCESSES: Final = 4
FANOUT_PER_PROCESS: Final = 25
CACHED_BATCHES: Final = 2000
CACHED_CALLS: Final = 100

TARGETS: Final[dict[str, tuple[str, Callable[[dict[str, Any]], bool]]]] = {
    "bridged_get_us_p50": (
        "<= 1.15x grpc_echo_us_p50",
        lambda f: f["bridged_get_us_p50"] <= 1.15 * f["grpc_echo_us_p50"],
    ),
    "cached_get_ns_p50": ("<= 2000 ns", lambda f: f["cached_get_ns_p50"] <= 2000),
    "batch100_speedup": (">= 20", lambda f: f["batch100_speedup"] >= 20),
    "watch_last_of_100_us_p99": ("<= 15000 us", lambda f: f["watch_last_of_100_us_p99"] <= 15000),
}
"""Figure -> (target text, check over all figures) from the bridge issue."""


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- processes ----------------------------------------------------------------------------


def _server_main(conn: Any) -> None:
    """Child process: run a store server until the parent says stop (or goes away)."""
    from dspex.state import LocalProvider
    from dspex.state.store import StoreServer

    server = StoreServer.start(LocalProvider(), "127.0.0.1:0")
    conn.send(server.address)
    try:
        conn.recv()
    except EOFError:
        pass
    server.stop(grace=0.2)


def _watchers_main(address: str, session_id: str, count: int, conn: Any) -> None:
    """Child process: ``count`` watches; report (value, arrival ns) per update when told."""
    from dspex.state.store import SessionStoreProvider

    provider = SessionStoreProvider(address)
    arrivals: list[list[tuple[int, int]]] = [[] for _ in range(count)]

    def consume(watch: Any, out: list[tuple[int, int]]) -> None:
        for update in watch:
            out.append((update.record.value, time.perf_counter_ns()))

    watches = [provider.watch_variables(session_id, ["w"]) for _ in range(count)]
    threads = [
        threading.Thread(target=consume, args=(w, out), daemon=True)
        for w, out in zip(watches, arrivals, strict=True)
    ]
    for thread in threads:
        thread.start()
    conn.send("ready")
    conn.recv()
    for watch in watches:
        watch.cancel()
    for thread in threads:
        thread.join(5)
    conn.send(arrivals)
    provider.close()


@contextmanager
def _store_process() -> Iterator[str]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_server_main, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("bench store server did not start within 30 s")
        yield str(parent.recv())
    finally:
        parent.send("stop")
        process.join(10)
        if process.is_alive():
            process.terminate()


# -- figures ------------------------------------------------------------------------------


def _echo_and_get(client: Any, sid: str) -> dict[str, float]:
    echo: list[float] = []
    get: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(200):
        client.ping()
        client.get_variable(sid, "t")
    for _ in range(SAMPLES):
        start = clock()
        client.ping()
        middle = clock()
        client.get_variable(sid, "t")
        echo.append((middle - start) / 1000)
        get.append((clock() - middle) / 1000)
    return {
        "grpc_echo_us_p50": statistics.median(echo),
        "bridged_get_us_p50": statistics.median(get),
        "bridged_get_us_p99": _percentile(get, 0.99),
    }


def _set(client: Any, sid: str) -> float:
    times: list[float] = []
    for step in range(SAMPLES):
        start = time.perf_counter_ns()
        client.set_variable(sid, "t", (step % 100) / 100)
        times.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(times[100:])


def _cached_get(address: str, sid: str) -> float:
    from dspex.state import SessionContext

    context = SessionContext.connect(address, sid)
    try:
        get = context.get
        for _ in range(1000):
            get("t")
        per_call: list[float] = []
        for _ in range(CACHED_BATCHES):
            start = time.perf_counter_ns()
            for _ in range(CACHED_CALLS // 10):  # ten calls written out: less loop overhead
                get("t")
                get("t")
                get("t")
                get("t")
                get("t")
                get("t")
                get("t")
                get("t")
                get("t")
                get("t")
            per_call.append((time.perf_counter_ns() - start) / CACHED_CALLS)
        return statistics.median(per_call)
    finally:
        context.provider.close()


def _batch_speedup(client: Any, sid: str) -> float:
    from dspex._model import make_spec

    names = [f"v{i:03d}" for i in range(100)]
    spec = make_spec(float)
    for name in names:
        client.register_variable(sid, name, spec, 0.0)
    singles: list[float] = []
    batches: list[float] = []
    for round_ in range(15):
        value = round_ / 10
        start = time.perf_counter()
        for name in names:
            client.set_variable(sid, name, value)
        singles.append(time.perf_counter() - start)
        start = time.perf_counter()
        client.update_variables(sid, dict.fromkeys(names, value + 0.05), atomic=True)
        batches.append(time.perf_counter() - start)
    return statistics.median(singles) / statistics.median(batches)


def _watch_delivery(client: Any, sid: str) -> dict[str, float]:
    arrived = threading.Event()
    stamp: list[int] = [0]

    with client.watch_variables(sid, ["t"]) as watch:

        def consume() -> None:
            for _ in watch:
                stamp[0] = time.perf_counter_ns()
                arrived.set()

        threading.Thread(target=consume, daemon=True).start()
        times: list[float] = []
        for step in range(WATCH_SAMPLES + 20):
            arrived.clear()
            start = time.perf_counter_ns()
            client.set_variable(sid, "t", (step % 100) / 100)
            if not arrived.wait(5):
                raise RuntimeError("a watch update did not arrive within 5 s")
            times.append((stamp[0] - start) / 1000)
    times = times[20:]
    return {
        "watch_delivery_us_p50": statistics.median(times),
        "watch_delivery_us_p99": _percentile(times, 0.99),
    }


def _watch_fanout(client: Any, address: str, sid: str) -> float:
    from dspex._model import make_spec

    client.register_variable(sid, "w", make_spec(int), -1)
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for _ in range(FANOUT_PROCESSES):
        parent, child = context.Pipe()
        process = context.Process(
            target=_watchers_main, args=(address, sid, FANOUT_PER_PROCESS, child), daemon=True
        )
        process.start()
        pipes.append(parent)
        processes.append(process)
    try:
        for parent in pipes:
            if not parent.poll(60):
                raise RuntimeError("bench watcher processes did not start within 60 s")
            parent.recv()
        sent: list[int] = []
        for step in range(FANOUT_SAMPLES):
            sent.append(time.perf_counter_ns())
            client.set_variable(sid, "w", step)
            time.sleep(0.02)  # let each fan-out finish: samples stay independent
        time.sleep(0.5)
        arrivals: list[list[tuple[int, int]]] = []
        for parent in pipes:
            parent.send("stop")
            arrivals.extend(parent.recv())
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
    last = [max(a[step][1] for a in arrivals) - sent[step] for step in range(FANOUT_SAMPLES)]
    return _percentile([t / 1000 for t in last[10:]], 0.99)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _redis_get() -> float | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    import redis

    port = _free_port()
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.set("t", "0.7")
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)
        for _ in range(200):
            client.get("t")
        times = []
        for _ in range(SAMPLES):
            start = time.perf_counter_ns()
            client.get("t")
            times.append((time.perf_counter_ns() - start) / 1000)
        client.close()
        return statistics.median(times)
    finally:
        server.terminate()
        server.wait(10)


def run() -> dict[str, Any]:
    """Measure every bridge figure against one spawned store server."""
    from dspex._model import make_spec
    from dspex.state.store import SessionStoreProvider

    figures: dict[str, Any] = {}
    with _store_process() as address:
        client = SessionStoreProvider(address)
        try:
            client.wait_ready(30)
            sid = client.create_session()
            client.register_variable(sid, "t", make_spec(float, min=0.0, max=2.0), 0.7)
            figures.update(_echo_and_get(client, sid))
            figures["bridged_set_us_p50"] = _set(client, sid)
            figures["cached_get_ns_p50"] = _cached_get(address, sid)
            figures["batch100_speedup"] = _batch_speedup(client, sid)
            figures.update(_watch_delivery(client, sid))
            figures["watch_last_of_100_us_p99"] = _watch_fanout(client, address, sid)
        finally:
            client.close()
    figures["redis_get_us_p50"] = _redis_get()
    figures["bridge_channel"] = "loopback TCP to a store server in a spawned process"
    return figures
