"""Prometheus metrics of a real ``dspex serve --metrics-port``, scraped over HTTP.

The test drives real RPCs through the store (sets and gets, a refused call, a watch, a lock
waited on, tool calls, a watch that lags) and parses each scrape with prometheus_client's own
text-format parser, checking that every metric moved by what was done.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import wait_until
from support.redis_server import RedisServer, free_port
from support.serve_process import ServeProcess, run_dspex

import dspex
from dspex.errors import ToolError, ToolNotFoundError, VariableNotFoundError, WatchLaggedError
from dspex.state import SessionContext
from dspex.state.store import SessionStoreProvider

STORE = "dspex.bridge.v1.SessionStore"
TOOLS = "dspex.bridge.v1.ToolStore"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scraper:
    """Reads ``/metrics`` and answers one sample's value (0 when absent)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: Samples = {}

    def scrape(self) -> Scraper:
        with urllib.request.urlopen(self.url, timeout=10) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain")
            text = answer.read().decode()
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return self

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def now(self, name: str, **labels: str) -> float:
        return self.scrape()(name, **labels)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ServeProcess, Scraper]]:
    port = free_port()
    store = ServeProcess("--metrics-port", str(port), "--watch-queue-size", "2").start()
    try:
        yield store, Scraper(f"http://127.0.0.1:{port}/metrics")
    finally:
        assert store.stop() == 0


@pytest.fixture
def view(served: tuple[ServeProcess, Scraper]) -> Iterator[SessionContext]:
    client = SessionStoreProvider(served[0].address)
    try:
        yield SessionContext(client, client.create_session())
    finally:
        client.close()


def rpcs(metrics: Scraper, method: str, code: str = "OK", service: str = STORE) -> float:
    return metrics("dspex_rpcs_total", service=service, method=method, code=code)


def test_rpcs_by_method_and_code_latency_engine_and_state(
    served: tuple[ServeProcess, Scraper], view: SessionContext
) -> None:
    metrics = served[1].scrape()
    sets, refused = rpcs(metrics, "SetVariable"), rpcs(metrics, "GetVariable", "NOT_FOUND")
    latency = metrics("dspex_rpc_duration_seconds_count", service=STORE, method="SetVariable")
    engine_writes = metrics.total("dspex_engine_operation_duration_seconds_count")
    view.register("temperature", float, 0.1)
    for value in (0.2, 0.3, 0.4):
        view.set("temperature", value)
    assert view.get("temperature") == 0.4
    with pytest.raises(VariableNotFoundError):
        view.get("no_such_variable")

    # an abort sends its status before the handler unwinds to where the call is counted, so
    # the client may see the error a moment before the count moves: wait for it
    assert wait_until(lambda: rpcs(metrics.scrape(), "GetVariable", "NOT_FOUND") == refused + 1)
    assert rpcs(metrics, "SetVariable") == sets + 3
    assert metrics("dspex_rpc_duration_seconds_count", service=STORE, method="SetVariable") == (
        latency + 3
    )
    assert metrics("dspex_rpc_duration_seconds_sum", service=STORE, method="SetVariable") > 0
    # the engine contract was timed: at least one engine write per set (memory: commit_set)
    assert metrics.total("dspex_engine_operation_duration_seconds_count") >= engine_writes + 4
    sessions = view.provider.list_sessions()
    assert metrics("dspex_sessions") == len(sessions)
    assert metrics("dspex_variables") == sum(s.variable_count for s in sessions)


def test_an_open_watch_is_counted_and_its_end_recorded(
    served: tuple[ServeProcess, Scraper], view: SessionContext
) -> None:
    metrics = served[1]
    view.register("step", int, 0)
    assert metrics.now("dspex_watchers") == 0
    ended = metrics.total("dspex_rpcs_total", method="WatchVariables")
    with view.watch("step") as watch:
        assert wait_until(lambda: metrics.now("dspex_watchers") == 1)
        view.set("step", 1)
        update = watch.poll(10)
        assert update is not None and update.record.value == 1
    assert wait_until(lambda: metrics.now("dspex_watchers") == 0)
    # the RPC is counted when its handler returns, just after the watcher gauge drops: re-scrape
    assert wait_until(
        lambda: metrics.scrape().total("dspex_rpcs_total", method="WatchVariables") > ended
    )


def test_a_lock_waited_on_and_its_holders(
    served: tuple[ServeProcess, Scraper], view: SessionContext
) -> None:
    metrics = served[1]
    view.register("prompt", str, "v1")
    address = served[0].address
    first = SessionStoreProvider(address)
    second = SessionStoreProvider(address)
    sid = view.session_id
    waits = metrics.scrape()("dspex_lock_waits_total", outcome="acquired")
    waited = metrics("dspex_lock_wait_seconds_count")
    try:
        first.acquire_lock(sid, "prompt", owner="a", optimizer_id="opt-a")
        metrics.scrape()
        assert metrics("dspex_lock_holders") >= 1
        assert metrics("dspex_locks_held") >= 1
        taken: list[Any] = []
        waiter = threading.Thread(
            target=lambda: taken.append(
                second.acquire_lock(
                    sid, "prompt", owner="b", optimizer_id="opt-b", policy="wait", timeout=20
                )
            )
        )
        waiter.start()
        assert wait_until(lambda: metrics.now("dspex_lock_waiters") == 1)
        first.release_lock(sid, "prompt", owner="a")
        waiter.join(20)
        assert taken and taken[0].name == "prompt"
        metrics.scrape()
        assert metrics("dspex_lock_waiters") == 0
        assert metrics("dspex_lock_waits_total", outcome="acquired") == waits + 1
        assert metrics("dspex_lock_wait_seconds_count") == waited + 1
        assert metrics("dspex_lock_wait_seconds_sum") > 0
        assert rpcs(metrics, "AcquireLock") >= 2
    finally:
        first.close()
        second.close()  # its HoldLocks stream ends: the lock it holds is released
    assert wait_until(lambda: metrics.now("dspex_locks_held") == 0)


def test_tool_calls_by_tool_and_outcome(served: tuple[ServeProcess, Scraper]) -> None:
    metrics = served[1]
    address = served[0].address
    with dspex.Session(address) as owner:

        @dspex.tool
        def measure(city: str) -> float:
            """Measure the temperature."""
            return 21.5

        @dspex.tool
        def broken(city: str) -> float:
            """Always fails."""
            raise ValueError(city)

        caller = dspex.Session(address, session_id=owner.session_id)
        try:
            assert caller.call_tool("measure", {"city": "Oslo"}) == 21.5
            assert caller.call_tool("measure", {"city": "Bergen"}) == 21.5
            with pytest.raises(ToolError, match="Oslo"):
                caller.call_tool("broken", {"city": "Oslo"})
            with pytest.raises(ToolNotFoundError):
                caller.call_tool("absent", {})
        finally:
            caller.close()
    # refused calls are counted as their handlers unwind, just after the client saw the error
    assert wait_until(lambda: rpcs(metrics.scrape(), "CallTool", "NOT_FOUND", service=TOOLS) == 1)
    assert metrics("dspex_tool_calls_total", tool="measure", outcome="ok") == 2
    assert metrics("dspex_tool_calls_total", tool="broken", outcome="raised") == 1
    assert metrics("dspex_tool_calls_total", tool="absent", outcome="failed") == 1
    assert rpcs(metrics, "CallTool", service=TOOLS) == 3  # a raised tool is still an answer


def test_a_watch_that_lags_is_counted(
    served: tuple[ServeProcess, Scraper], view: SessionContext
) -> None:
    """The server keeps 2 pending updates per watcher (--watch-queue-size 2): one batch of 50
    changes overflows it, and the stream ends with "resume from revision N"."""
    metrics = served[1]
    names = [f"v{i:02d}" for i in range(50)]
    for name in names:
        view.register(name, int, 0)
    drops = metrics.now("dspex_watch_lag_drops_total")
    with (
        view.provider.watch_variables(view.session_id, names) as watch,
        pytest.raises(WatchLaggedError),
    ):
        view.update(dict.fromkeys(names, 1))
        while watch.poll(10) is not None:
            pass
    assert wait_until(lambda: rpcs(metrics.scrape(), "WatchVariables", "OUT_OF_RANGE") >= 1)
    assert metrics("dspex_watch_lag_drops_total") == drops + 1


def test_a_busy_metrics_port_stops_dspex_serve_before_it_listens() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_dspex("serve", "--address", "127.0.0.1:0", "--metrics-port", str(port))
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "choose another --metrics-port" in result.stderr
    assert "listening" not in result.stdout


def test_a_metrics_port_out_of_range_is_refused_in_one_line() -> None:
    result = run_dspex("serve", "--address", "127.0.0.1:0", "--metrics-port", "70000")
    assert result.returncode == 2  # refused while the flags are parsed, like every number
    assert "argument --metrics-port: must be a port number from 0 to 65535" in result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stdout


@pytest.mark.redis
def test_engine_operations_are_timed_on_a_blocking_engine(redis_server: RedisServer) -> None:
    """On Redis (calls run in worker threads) the engine's own operations are timed too:
    every read is an engine call there, so a get shows as an engine ``get``."""
    port = free_port()
    flags = ("--redis", redis_server.url, "--redis-prefix", f"metrics{port}")
    with ServeProcess(*flags, "--metrics-port", str(port)) as store:
        metrics = Scraper(f"http://127.0.0.1:{port}/metrics")
        client = SessionStoreProvider(store.address)
        try:
            view = SessionContext(client, client.create_session())
            view.register("temperature", float, 0.1)
            before = metrics.scrape().total(
                "dspex_engine_operation_duration_seconds_count", operation="get"
            )
            for _ in range(3):
                assert view.get("temperature") == 0.1
            metrics.scrape()
            gets = metrics.total("dspex_engine_operation_duration_seconds_count", operation="get")
            assert gets >= before + 3
            assert metrics.total(
                "dspex_engine_operation_duration_seconds_count", operation="commit"
            )
            assert rpcs(metrics, "GetVariable") == 3
            assert metrics("dspex_sessions") >= 1
        finally:
            client.close()


def test_sets_committed_off_the_loop_are_timed_as_commits(tmp_path: Any) -> None:
    """With ``--fsync`` a set is committed by the engine's committer thread: it is timed as a
    ``commit`` from the call to its acknowledgement, once per set."""
    port = free_port()
    flags = ("--data", str(tmp_path / "data"), "--fsync", "--metrics-port", str(port))
    with ServeProcess(*flags) as store:
        metrics = Scraper(f"http://127.0.0.1:{port}/metrics")
        client = SessionStoreProvider(store.address)
        try:
            view = SessionContext(client, client.create_session())
            view.register("temperature", float, 0.1)
            commits = "dspex_engine_operation_duration_seconds_count"
            before = metrics.scrape().total(commits, operation="commit")
            for value in (0.2, 0.3, 0.4):
                view.set("temperature", value)
            assert metrics.scrape().total(commits, operation="commit") == before + 3
            assert rpcs(metrics, "SetVariable") == 3
        finally:
            client.close()
