"""``dspex bench engines``: a set through the store server on each storage engine, measured
interleaved in one run, beside a raw Redis GET.

Three ``dspex serve`` processes run on loopback TCP: memory (the default), ``--data DIR``
(SQLite, WAL) and ``--redis URL`` (a ``redis-server`` this suite starts on a free port). Every
round times a block of ``set_variable`` calls on each server and of raw redis-py GETs, in
rotating order, so all four figures see the same machine load:

* ``memory_engine_set_us_p50``, ``sqlite_engine_set_us_p50``, ``redis_engine_set_us_p50``;
* ``redis_get_us_p50``: redis-py GET against the same redis-server (the floor a Redis-backed
  set cannot beat: the set itself is one Lua script call plus the gRPC round trip);
* ``sqlite_vs_memory_set_ratio``: SQLite without ``--fsync`` over memory, one writer;
* ``concurrent8_memory_set_us_p50``, ``concurrent8_sqlite_fsync_set_us_p50`` and their ratio
  ``sqlite_fsync_vs_memory_set_ratio``: the median latency of one ``set_variable`` call (from
  the call to its answer) over every set of 8 writers setting at once, back to back, each in
  its own session. The writers are 8 threads of this process, each with its own client; one
  ``dspex serve`` process (memory) and one ``--data DIR --fsync`` (SQLite: no set is answered
  before a disk flush covering it) take turns, round after round, so both see the same
  machine load. The memory figure is the baseline: the same writers, calls and server code
  without a disk. Client and servers share the machine, so both figures include the
  writers' own CPU time;
* ``concurrent8_memory_sets_per_s``, ``concurrent8_sqlite_fsync_sets_per_s``: the sets per
  second those 8 writers completed in the same rounds;
* ``disk_flush_us_p50``: ``fdatasync`` of a 4 KiB write to a file in the same directory,
  between the rounds: the floor under the ``--fsync`` figure, whose every set waits for at
  least one flush that began after its commit (on a shared VM this ranges from well under a
  millisecond to several);
* ``concurrent8_sqlite_fsync_flushes_per_change`` and ``..._commits_per_change``: the disk
  flushes and SQLite transactions per acknowledged change over the ``--fsync`` server's life
  (``SQLiteEngine.stats`` read from its data directory after it stopped): group commit makes
  both less than 1.

Without a ``redis-server`` binary the Redis figures are None and ``engines_note`` says why.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Final

__all__ = ["TARGETS", "run"]

SAMPLES: Final = 2000
BLOCK: Final = 20
WARMUP: Final = 200
START_TIMEOUT: Final = 30.0
_MAIN: Final = "import sys; from dspex.cli import main; sys.exit(main())"

TARGETS: Final[dict[str, tuple[str, Callable[[dict[str, Any]], bool]]]] = {
    "sqlite_engine_set_us_p50": (
        "<= 1.5x memory_engine_set_us_p50",
        lambda f: f["sqlite_engine_set_us_p50"] <= 1.5 * f["memory_engine_set_us_p50"],
    ),
    "sqlite_fsync_vs_memory_set_ratio": (
        "<= 1.5 with 8 concurrent writers",
        lambda f: f["sqlite_fsync_vs_memory_set_ratio"] <= 1.5,
    ),
}
"""Figure -> (target text, check over all figures) from the engines issue."""
WRITERS: Final = 8
CONCURRENT_ROUNDS: Final = 10
"""Rounds per server, alternating, each of ``CONCURRENT_SETS`` sets per writer: short rounds
so a change of machine load hits both servers alike."""
CONCURRENT_SETS: Final = 45
CONCURRENT_WARMUP: Final = 5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _redis_server(binary: str, directory: str) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URL."""
    import redis

    port = _free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", directory]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
            finally:
                client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def _store_server(*flags: str) -> Iterator[str]:
    """A ``dspex serve FLAGS`` process on a free loopback port; yields its address."""
    command = [sys.executable, "-c", _MAIN, "serve", "--address", "127.0.0.1:0", *flags]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the server prints its address once it listens
        if not line.startswith("dspex session store listening on"):
            raise RuntimeError(f"dspex serve {' '.join(flags)} did not start: {line!r}")
        yield line.split()[-1]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _setter(address: str, stack: ExitStack) -> Callable[[float], object]:
    """A client of ``address`` with a registered variable; returns its one-value set."""
    from dspex._model import make_spec
    from dspex.state.store import SessionStoreProvider

    client = SessionStoreProvider(address)
    stack.callback(client.close)
    client.wait_ready(START_TIMEOUT)
    session_id = client.create_session()
    client.register_variable(session_id, "t", make_spec(float, min=0.0, max=2.0), 0.7)
    set_variable = client.set_variable
    return lambda value: set_variable(session_id, "t", value)


def _redis_getter(url: str, stack: ExitStack) -> Callable[[float], object]:
    import redis

    client = redis.Redis.from_url(url)
    stack.callback(client.close)
    client.set("t", "0.7")
    return lambda _value: client.get("t")


def _measure(calls: dict[str, Callable[[float], object]]) -> dict[str, float]:
    """Median microseconds of each call, timed interleaved: blocks of ``BLOCK`` calls to each
    target in rotating order, so every target sees the same machine load while each call
    finds its server already awake, as a client doing back-to-back calls does."""
    names = list(calls)
    for step in range(WARMUP):
        for name in names:
            calls[name]((step % 100) / 100)
    times: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for round_ in range(SAMPLES // BLOCK):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            call, out = calls[name], times[name]
            for step in range(BLOCK):
                value = step / 100
                start = clock()
                call(value)
                out.append((clock() - start) / 1000)
    return {name: statistics.median(samples) for name, samples in times.items()}


def run() -> dict[str, Any]:
    """Measure a set through the server on every engine, and a raw Redis GET."""
    binary = shutil.which("redis-server")
    figures: dict[str, Any] = {}
    with ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="dspex-bench-"))
        calls = {
            "memory_engine_set_us_p50": _setter(stack.enter_context(_store_server()), stack),
            "sqlite_engine_set_us_p50": _setter(
                stack.enter_context(_store_server("--data", f"{directory}/data")), stack
            ),
        }
        if binary is not None:
            url = stack.enter_context(_redis_server(binary, directory))
            address = stack.enter_context(_store_server("--redis", url))
            calls["redis_engine_set_us_p50"] = _setter(address, stack)
            calls["redis_get_us_p50"] = _redis_getter(url, stack)
        figures.update(_measure(calls))
    if binary is None:
        figures["redis_engine_set_us_p50"] = figures["redis_get_us_p50"] = None
        figures["engines_note"] = (
            "redis-server not found: Redis figures are null (make test-deps installs it)"
        )
    figures["engines_channel"] = (
        "loopback TCP to one `dspex serve` process per engine (memory, --data DIR, "
        "--redis URL); blocks of 20 sets interleaved in rotating order"
    )
    figures["sqlite_vs_memory_set_ratio"] = round(
        figures["sqlite_engine_set_us_p50"] / figures["memory_engine_set_us_p50"], 3
    )
    figures.update(_concurrent())
    return figures


def _concurrent() -> dict[str, float]:
    """Set latency and throughput with ``WRITERS`` concurrent writers: memory vs SQLite with
    ``--fsync``, in alternating rounds so both see the same machine load; then the ``--fsync``
    server's flushes and transactions per change, read from its data directory."""
    with tempfile.TemporaryDirectory(prefix="dspex-bench-") as directory:
        data = f"{directory}/fsync"
        with ExitStack() as stack:
            servers = {
                "memory": stack.enter_context(_store_server()),
                "sqlite_fsync": stack.enter_context(_store_server("--data", data, "--fsync")),
            }
            setters = {
                kind: [_setter(address, stack) for _ in range(WRITERS)]
                for kind, address in servers.items()
            }
            times: dict[str, list[float]] = {kind: [] for kind in servers}
            seconds = dict.fromkeys(servers, 0.0)
            flushes: list[float] = []
            for _round in range(CONCURRENT_ROUNDS):
                for kind, group in setters.items():
                    seconds[kind] += _together(group, times[kind])
                flushes += _disk_flushes(f"{directory}/probe")
        figures = _group_commit(data)  # the server stopped: its data directory is free
    figures["disk_flush_us_p50"] = statistics.median(flushes)
    for kind, samples in times.items():
        figures[f"concurrent8_{kind}_set_us_p50"] = statistics.median(samples)
        figures[f"concurrent8_{kind}_sets_per_s"] = round(len(samples) / seconds[kind], 1)
    figures["sqlite_fsync_vs_memory_set_ratio"] = round(
        figures["concurrent8_sqlite_fsync_set_us_p50"] / figures["concurrent8_memory_set_us_p50"],
        3,
    )
    return figures


def _disk_flushes(path: str, count: int = 10) -> list[float]:
    """Microseconds of ``count`` 4 KiB writes to ``path``, each followed by ``fdatasync``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        times = []
        for step in range(count):
            os.pwrite(fd, os.urandom(4096), 4096 * step)
            began = time.perf_counter_ns()
            os.fdatasync(fd)
            times.append((time.perf_counter_ns() - began) / 1000)
        return times
    finally:
        os.close(fd)


def _group_commit(directory: str) -> dict[str, float]:
    """Flushes and transactions per acknowledged change over the data directory's life."""
    from dspex.state.engines.sqlite import SQLiteEngine

    engine = SQLiteEngine(directory)
    try:
        stats = engine.stats()
    finally:
        engine.close()
    changes = max(1, stats["changes"])
    return {
        "concurrent8_sqlite_fsync_flushes_per_change": round(stats["flushes"] / changes, 3),
        "concurrent8_sqlite_fsync_commits_per_change": round(stats["commits"] / changes, 3),
    }


def _together(setters: list[Callable[[float], object]], out: list[float]) -> float:
    """Append the microseconds of every set while all ``setters`` run at once (after a short
    warm-up) to ``out``; returns the seconds from the common start to the last one's end."""
    start = threading.Barrier(len(setters) + 1)
    times: list[list[float]] = [[] for _ in setters]

    def run(setter: Callable[[float], object], mine: list[float]) -> None:
        for step in range(CONCURRENT_WARMUP):
            setter(step / 100)
        start.wait()
        clock = time.perf_counter_ns
        for step in range(CONCURRENT_SETS):
            began = clock()
            setter((step % 100) / 100)
            mine.append((clock() - began) / 1000)

    threads = [
        threading.Thread(target=run, args=(setter, mine), daemon=True)
        for setter, mine in zip(setters, times, strict=True)
    ]
    for thread in threads:
        thread.start()
    start.wait(120)
    began = time.perf_counter()
    for thread in threads:
        thread.join(120)
    took = time.perf_counter() - began
    out += [sample for samples in times for sample in samples]
    return took
