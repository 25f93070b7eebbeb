"""``dspex bench bridge``: the gRPC bridge measured beside bare gRPC baselines in the same run.

A store server and a bare ``grpc.aio`` server (no dspex code: :mod:`dspex.bench._raw_grpc`) run
in spawned processes on loopback TCP, so client and servers do not share a GIL; every figure
uses that same kind of channel, and each sits beside its baseline (``bridge_baselines``):

* ``grpc_echo_us_p50``: a unary echo through the bare server, timed interleaved with
  ``bridged_get`` and ``dspex_ping_us_p50`` (dspex's own Ping) so all see the same load;
* ``bridged_get_us_p50/p99``, ``bridged_set_us_p50`` (beside ``grpc_echo_us_p50``);
* ``cached_get_ns_p50``: a hot ``SessionContext.get`` through ``SessionContext.connect``,
  beside ``dict_get_ns_p50``, the same loop over a plain dict;
* ``batch100_speedup``: 100 single sets divided by one 100-variable ``update_variables``;
* ``watch_delivery_us_p50/p99``: from a set to receipt by 1 watcher, beside
  ``grpc_stream_delivery_us_p50/p99``: from a raw poke to receipt on a raw server stream;
* ``watch_last_of_100_us_p99``: from a set to receipt by the last of 100 server watch streams
  (4 spawned processes of 25 dedicated streams each); ``watch_last_of_100_shared_stream_us_p99``
  the same 100 watches as live watches, which share one server stream per process (4 streams);
* ``set_paced_us_p50`` and ``set_with_1000_streams_us_p50``: a set's latency with no watcher
  and with 1,000 live server watch streams (4 processes of 250), paced alike, in the same run;
  ``watch_last_of_1000_us_p99``: from a set to receipt by the last of those 1,000 streams;
* the fan-out floor beside those: ``grpc_fanout_last_of_100_us_p99``,
  ``grpc_poke_paced_us_p50``, ``grpc_poke_with_1000_streams_us_p50`` and
  ``grpc_fanout_last_of_1000_us_p99``, the same runs with raw pokes to raw subscriptions of the
  bare server, laid out alike (4 processes, a thread per subscription), paced alike;
* ``redis_get_us_p50``: redis-py GET against a local ``redis-server`` (None without the binary).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Final

from dspex.bench._raw_grpc import (
    ECHO,
    POKE,
    raw_server,
    report_arrivals,
    spawned_server,
    subscribe,
    subscribers_main,
    unary,
)

__all__ = ["TARGETS", "run"]

SAMPLES: Final = 2000
WATCH_SAMPLES: Final = 300
FANOUT_SAMPLES: Final = 150
FANOUT_PROCESSES: Final = 4
FANOUT_PER_PROCESS: Final = 25
CROWD_PER_PROCESS: Final = 250
CROWD_SAMPLES: Final = 60
PACE: Final = 0.02
DELIVERY_WAIT: Final = 60.0
"""Most seconds a watcher process waits, after the last set, for its watches to receive it."""
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
    "set_with_1000_streams_us_p50": (
        "<= 2x set_paced_us_p50",
        lambda f: f["set_with_1000_streams_us_p50"] <= 2 * f["set_paced_us_p50"],
    ),
    "watch_last_of_1000_us_p99": (
        "<= 100000 us",
        lambda f: f["watch_last_of_1000_us_p99"] <= 100_000,
    ),
}
"""Figure -> (target text, check over all figures) from the bridge issue."""

BASELINES: Final = {
    "bridged_get_us_p50": "grpc_echo_us_p50",
    "bridged_set_us_p50": "grpc_echo_us_p50",
    "dspex_ping_us_p50": "grpc_echo_us_p50",
    "cached_get_ns_p50": "dict_get_ns_p50",
    "watch_delivery_us_p50": "grpc_stream_delivery_us_p50",
    "watch_delivery_us_p99": "grpc_stream_delivery_us_p99",
    "watch_last_of_100_us_p99": "grpc_fanout_last_of_100_us_p99",
    "watch_last_of_100_shared_stream_us_p99": "grpc_fanout_last_of_100_us_p99",
    "set_paced_us_p50": "grpc_poke_paced_us_p50",
    "set_with_1000_streams_us_p50": "set_paced_us_p50 and grpc_poke_with_1000_streams_us_p50",
    "watch_last_of_1000_us_p99": "grpc_fanout_last_of_1000_us_p99",
}
"""Figure -> the baseline(s) measured beside it in the same run."""


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


def _watchers_main(
    address: str, session_id: str, count: int, after: int | None, conn: Any
) -> None:
    """Child process: ``count`` watches of ``w`` (dedicated server streams from revision
    ``after``, or live watches sharing one stream when None), each read by its own thread
    (see :func:`report_arrivals`)."""
    from dspex.state.store import SessionStoreProvider

    provider = SessionStoreProvider(address, timeout=60.0)
    watches = [
        provider.watch_variables(session_id, ["w"], after_revision=after) for _ in range(count)
    ]

    def steps(watch: Any) -> Iterator[int]:
        return (update.record.value for update in watch)

    report_arrivals(conn, watches, steps, lambda watch: watch.cancel(), DELIVERY_WAIT)
    provider.close()


def _store_process() -> AbstractContextManager[str]:
    return spawned_server(_server_main, "bench store server")


# -- figures ------------------------------------------------------------------------------


def _echo_and_get(client: Any, sid: str, echo: Callable[[bytes], bytes]) -> dict[str, float]:
    """Raw echo, bridged get and dspex Ping, interleaved call by call."""
    calls = {
        "grpc_echo_us_p50": lambda: echo(b"ping"),
        "bridged_get_us_p50": lambda: client.get_variable(sid, "t"),
        "dspex_ping_us_p50": client.ping,
    }
    times = _interleaved(calls)
    figures = {name: statistics.median(samples) for name, samples in times.items()}
    figures["bridged_get_us_p99"] = _percentile(times["bridged_get_us_p50"], 0.99)
    return figures


def _interleaved(calls: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Microseconds of each call, called in turn ``SAMPLES`` times after a warm-up."""
    clock = time.perf_counter_ns
    for _ in range(200):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(SAMPLES):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append((clock() - start) / 1000)
    return times


def _set(client: Any, sid: str) -> float:
    times: list[float] = []
    for step in range(SAMPLES):
        start = time.perf_counter_ns()
        client.set_variable(sid, "t", (step % 100) / 100)
        times.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(times[100:])


def _paced(send: Callable[[int], object]) -> float:
    """A send's latency paced as in the fan-out runs, with no receiver."""
    times: list[float] = []
    for step in range(CROWD_SAMPLES):
        start = time.perf_counter_ns()
        send(step)
        times.append((time.perf_counter_ns() - start) / 1000)
        time.sleep(PACE)
    return statistics.median(times[5:])


def _cached_get(address: str, sid: str) -> dict[str, float]:
    from dspex.state import SessionContext

    context = SessionContext.connect(address, sid)
    try:
        return {
            "cached_get_ns_p50": _hot_get(context.get),
            "dict_get_ns_p50": _hot_get({"t": 0.7}.get),
        }
    finally:
        context.provider.close()


def _hot_get(get: Callable[[str], object]) -> float:
    """Median nanoseconds of ``get("t")`` in batches of ten calls written out."""
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


def _raw_delivery(channel: Any) -> dict[str, float]:
    """From a raw poke to receipt on a raw subscription (the floor of a watch delivery)."""
    import grpc

    arrived = threading.Event()
    stamp: list[int] = [0]
    poke = unary(channel, POKE)
    stream = subscribe(channel)

    def consume() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            for _ in stream:
                stamp[0] = time.perf_counter_ns()
                arrived.set()

    threading.Thread(target=consume, daemon=True).start()
    times: list[float] = []
    try:
        for _ in range(WATCH_SAMPLES + 20):
            arrived.clear()
            start = time.perf_counter_ns()
            poke(b"x")
            if not arrived.wait(5):
                raise RuntimeError("a raw stream message did not arrive within 5 s")
            times.append((stamp[0] - start) / 1000)
    finally:
        stream.cancel()  # type: ignore[attr-defined]
    times = times[20:]
    return {
        "grpc_stream_delivery_us_p50": statistics.median(times),
        "grpc_stream_delivery_us_p99": _percentile(times, 0.99),
    }


def _watch_fanout(
    client: Any, address: str, sid: str, per_process: int, *, shared: bool, samples: int
) -> tuple[float, float]:
    """:func:`_fanout` of sets to ``FANOUT_PROCESSES x per_process`` watches of ``w``:
    dedicated server streams, or live watches that share one stream per process."""
    after = None if shared else client.get_session(sid).revision
    return _fanout(
        lambda step: client.set_variable(sid, "w", step),
        _watchers_main,
        (address, sid, per_process, after),
        samples,
    )


def _raw_fanout(
    poke: Callable[[bytes], bytes], raw_address: str, per_process: int, samples: int
) -> tuple[float, float]:
    """:func:`_fanout` of raw pokes to ``FANOUT_PROCESSES x per_process`` raw subscriptions
    of the bare server, each read by its own thread: the same layout with no dspex code."""
    return _fanout(
        lambda step: poke(str(step).encode()),
        subscribers_main,
        (raw_address, per_process, DELIVERY_WAIT),
        samples,
    )


def _fanout(
    send: Callable[[int], object], main: Callable[..., None], args: tuple[Any, ...], samples: int
) -> tuple[float, float]:
    """(p99 from a send to receipt by the last receiver, p50 of the send call), sending steps
    ``0..samples-1`` paced by :data:`PACE` to ``FANOUT_PROCESSES`` spawned processes running
    ``main(*args, conn)``; each says "ready" on ``conn``, then reports its arrivals once it
    got the last step."""
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for _ in range(FANOUT_PROCESSES):
        parent, child = context.Pipe()
        process = context.Process(target=main, args=(*args, child), daemon=True)
        process.start()
        pipes.append(parent)
        processes.append(process)
    try:
        for parent in pipes:
            if not parent.poll(120):
                raise RuntimeError("bench watcher processes did not start within 120 s")
            parent.recv()
        sent: list[int] = []
        took: list[float] = []
        for step in range(samples):
            sent.append(time.perf_counter_ns())
            send(step)
            took.append((time.perf_counter_ns() - sent[-1]) / 1000)
            time.sleep(PACE)  # paced alike with and without receivers
        arrivals: list[list[tuple[int, int]]] = []
        for parent in pipes:
            parent.send(samples - 1)  # each process reports once its receivers got the last
        for parent in pipes:
            arrivals.extend(parent.recv())
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
    last = [_last_arrival(arrivals, step) - sent[step] for step in range(samples)]
    return _percentile([t / 1000 for t in last[5:]], 0.99), statistics.median(took[5:])


def _last_arrival(arrivals: list[list[tuple[int, int]]], step: int) -> int:
    """When the last watcher received value ``step`` (every watcher must have)."""
    latest = 0
    for received in arrivals:
        stamps = [at for value, at in received if value == step]
        if not stamps:
            raise RuntimeError(f"a watcher never received update {step}")
        latest = max(latest, stamps[0])
    return latest


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
    import grpc

    from dspex._model import make_spec
    from dspex.state.store import SessionStoreProvider

    figures: dict[str, Any] = {}
    with _store_process() as address, raw_server() as raw:
        client = SessionStoreProvider(address)
        channel = grpc.insecure_channel(raw)
        try:
            client.wait_ready(30)
            sid = client.create_session()
            client.register_variable(sid, "t", make_spec(float, min=0.0, max=2.0), 0.7)
            figures.update(_echo_and_get(client, sid, unary(channel, ECHO)))
            figures["bridged_set_us_p50"] = _set(client, sid)
            figures.update(_cached_get(address, sid))
            figures["batch100_speedup"] = _batch_speedup(client, sid)
            figures.update(_watch_delivery(client, sid))
            figures.update(_raw_delivery(channel))
            figures.update(_fanouts(client, address, sid, raw, unary(channel, POKE)))
        finally:
            channel.close()
            client.close()
    figures["redis_get_us_p50"] = _redis_get()
    figures["bridge_channel"] = (
        "loopback TCP to a store server and to a bare grpc.aio server, each in a spawned process"
    )
    figures["bridge_baselines"] = "; ".join(f"{k} beside {v}" for k, v in BASELINES.items())
    return figures


def _fanouts(
    client: Any, address: str, sid: str, raw: str, poke: Callable[[bytes], bytes]
) -> dict[str, float]:
    """The fan-out figures (100 dedicated streams, 100 shared watches, 1,000 streams), each
    beside the bare server's fan-out to as many raw subscriptions, measured alternately."""
    from dspex._model import make_spec

    client.register_variable(sid, "w", make_spec(int), -1)
    figures: dict[str, float] = {}
    figures["watch_last_of_100_us_p99"], _ = _watch_fanout(
        client, address, sid, FANOUT_PER_PROCESS, shared=False, samples=FANOUT_SAMPLES
    )
    figures["grpc_fanout_last_of_100_us_p99"], _ = _raw_fanout(
        poke, raw, FANOUT_PER_PROCESS, FANOUT_SAMPLES
    )
    figures["watch_last_of_100_shared_stream_us_p99"], _ = _watch_fanout(
        client, address, sid, FANOUT_PER_PROCESS, shared=True, samples=FANOUT_SAMPLES
    )
    figures["set_paced_us_p50"] = _paced(lambda step: client.set_variable(sid, "w", step))
    figures["grpc_poke_paced_us_p50"] = _paced(lambda step: poke(str(step).encode()))
    (
        figures["watch_last_of_1000_us_p99"],
        figures["set_with_1000_streams_us_p50"],
    ) = _watch_fanout(client, address, sid, CROWD_PER_PROCESS, shared=False, samples=CROWD_SAMPLES)
    (
        figures["grpc_fanout_last_of_1000_us_p99"],
        figures["grpc_poke_with_1000_streams_us_p50"],
    ) = _raw_fanout(poke, raw, CROWD_PER_PROCESS, CROWD_SAMPLES)
    return figures
