"""Server side: Prometheus metrics of one store server (``dspex serve --metrics-port N``).

Needs ``prometheus_client`` (the ``dspex[metrics]`` extra); only a server that asks for metrics
imports this module. Every metric lives in the server's own registry (never the process-global
one), so two servers in one process do not mix, and is gathered at one place each:

* RPCs (count by service, method and status code; latency of unary calls) by a
  :class:`~dspex.state.server.observe.CallObserver` that sees every call;
* engine operation latency by :class:`TimedEngine`, which wraps the engine contract;
* lock waits, watch lag drops and tool calls from the servicer's
  :class:`~dspex.state.server.observe.StoreEvents`;
* sessions, variables, watchers and lock holders read from the servicer when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Final, cast

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dspex.errors import DspexError, StoreError
from dspex.state.engines.contract import Engine
from dspex.state.server.observe import StoreEvents

__all__ = ["MetricsEndpoint", "ServerMetrics", "TimedEngine"]

_LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds: store calls answer in tens of microseconds to seconds (a waiting lock)."""

_ENGINE_OPERATIONS: Final = (
    "create_session", "session", "sessions", "touch", "drop_session", "get", "records",
    "history", "commit", "commit_set", "changes", "edges", "put_edges",
)  # fmt: skip
"""The engine contract's calls that :class:`TimedEngine` times (``commit_set`` when the engine
has that fast path)."""


class _StateCollector(Collector):  # type: ignore[misc]
    """Gauges read when Prometheus scrapes: sessions, variables, watchers, lock holders."""

    def __init__(self) -> None:
        self.store: Any = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = self.store
        if store is None:
            return
        try:
            infos = store.provider.list_sessions()
        except DspexError:  # the engine is unreachable: say nothing rather than fail the scrape
            infos = None
        if infos is not None:
            yield GaugeMetricFamily("dspex_sessions", "Open sessions", value=len(infos))
            total = sum(info.variable_count for info in infos)
            yield GaugeMetricFamily("dspex_variables", "Variables in open sessions", value=total)
        yield GaugeMetricFamily(
            "dspex_watchers", "Open WatchVariables streams", value=store.watch_count
        )
        yield GaugeMetricFamily(
            "dspex_lock_waiters",
            "AcquireLock calls waiting for a lock now",
            value=store.lock_waiters,
        )
        yield GaugeMetricFamily(
            "dspex_lock_holders",
            "Client connections that hold locks for their life (open HoldLocks streams)",
            value=store.holders.count,
        )
        yield GaugeMetricFamily(
            "dspex_locks_held",
            "Locks those connections hold now",
            value=store.holders.held_count,
        )


class ServerMetrics(StoreEvents):
    """The Prometheus metrics of one store server, in a registry of its own.

    Give it to :func:`~dspex.state.store.serve` (``metrics=``) and wrap the provider's engine
    with :meth:`timed` before the provider is built; serve :attr:`registry` over HTTP with
    :class:`MetricsEndpoint`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._rpcs = Counter(
            "dspex_rpcs", "RPCs finished, by method and status code",
            ("service", "method", "code"), registry=reg,
        )  # fmt: skip
        self._latency = Histogram(
            "dspex_rpc_duration_seconds", "Time to answer a unary RPC",
            ("service", "method"), buckets=_LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self._engine = Histogram(
            "dspex_engine_operation_duration_seconds", "Time of one storage-engine operation",
            ("operation",), buckets=_LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self._lock_waits = Counter(
            "dspex_lock_waits", "AcquireLock calls that waited for a taken lock, by outcome",
            ("outcome",), registry=reg,
        )  # fmt: skip
        self._lock_wait_time = Histogram(
            "dspex_lock_wait_seconds", "Time an AcquireLock waited for a taken lock",
            buckets=_LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self._lag_drops = Counter(
            "dspex_watch_lag_drops", "Watch streams ended because the reader fell behind",
            registry=reg,
        )  # fmt: skip
        self._tool_calls = Counter(
            "dspex_tool_calls", "CallTool calls by tool and outcome (ok, raised, failed)",
            ("tool", "outcome"), registry=reg,
        )  # fmt: skip
        self._state = _StateCollector()
        reg.register(self._state)
        self._methods: dict[str, tuple[str, str, Any]] = {}
        self._codes: dict[tuple[str, grpc.StatusCode], Any] = {}

    # -- wiring ---------------------------------------------------------------------------

    def watch(self, store: Any) -> None:
        """Read the scrape-time gauges from ``store`` (the SessionStore servicer)."""
        self._state.store = store

    def timed(self, engine: Engine) -> Engine:
        """``engine`` with every contract operation timed into this registry."""
        return cast(Engine, TimedEngine(engine, self._engine))

    # -- CallObserver ---------------------------------------------------------------------

    def begin(self, method: str, context: Any, streaming: bool) -> Any:
        known = self._methods.get(method)
        if known is None:
            service, _, name = method.lstrip("/").rpartition("/")
            known = (service, name, self._latency.labels(service, name))
            self._methods[method] = known
        return method, known, None if streaming else time.perf_counter()

    def end(self, token: Any, code: grpc.StatusCode) -> None:
        method, (service, name, latency), started = token
        if started is not None:
            latency.observe(time.perf_counter() - started)
        counter = self._codes.get((method, code))
        if counter is None:
            counter = self._rpcs.labels(service, name, code.name)
            self._codes[(method, code)] = counter
        counter.inc()

    # -- StoreEvents ----------------------------------------------------------------------

    def lock_waited(self, seconds: float, acquired: bool) -> None:
        self._lock_waits.labels("acquired" if acquired else "gave_up").inc()
        self._lock_wait_time.observe(seconds)

    def watch_lagged(self) -> None:
        self._lag_drops.inc()

    def tool_called(self, tool: str, outcome: str) -> None:
        self._tool_calls.labels(tool, outcome).inc()


def _timed(method: Callable[..., Any], histogram: Any) -> Callable[..., Any]:
    observe = histogram.observe

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            observe(time.perf_counter() - started)

    return timed


def _timed_later(method: Callable[..., Any], histogram: Any) -> Callable[..., Any]:
    """``commit_later`` timed until its future resolves (see ``SQLiteEngine.commit_later``)."""
    observe = histogram.observe

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        future = method(*args, **kwargs)
        if future is not None:
            future.add_done_callback(lambda _: observe(time.perf_counter() - started))
        return future

    return timed


class TimedEngine:
    """An engine whose contract operations (:data:`_ENGINE_OPERATIONS`) are timed.

    Reads that the semantics layer serves straight from an engine's in-memory image (the
    ``spaces`` of the memory and SQLite engines) are not engine calls and are not timed.
    """

    def __init__(self, engine: Engine, histogram: Any) -> None:
        self.inner = engine
        self.history_size = engine.history_size
        spaces = getattr(engine, "spaces", None)
        if spaces is not None:
            self.spaces = spaces
        for operation in _ENGINE_OPERATIONS:
            method = getattr(engine, operation, None)
            if method is not None:
                setattr(self, operation, _timed(method, histogram.labels(operation)))
        later = getattr(engine, "commit_later", None)
        if later is not None:  # timed from the call to the acknowledgement, as "commit"
            self.commit_later = _timed_later(later, histogram.labels("commit"))

    @property
    def blocks(self) -> bool:
        """As the wrapped engine."""
        return self.inner.blocks

    def now(self) -> float:
        """The wrapped engine's clock (leases and TTLs are decided by it)."""
        return self.inner.now()

    def listen(self, listener: Any) -> None:
        """As the wrapped engine."""
        self.inner.listen(listener)

    def close(self) -> None:
        """Close the wrapped engine."""
        self.inner.close()


class MetricsEndpoint:
    """``/metrics`` of one registry over HTTP, in a daemon thread (prometheus_client's server).

    Raises:
        StoreError: the port cannot be used (checked before the store listens).
    """

    def __init__(self, metrics: ServerMetrics, host: str, port: int) -> None:
        try:
            self._server, self._thread = start_http_server(port, host, registry=metrics.registry)
        except OSError as exc:
            raise StoreError(
                f"cannot serve metrics on {host}:{port} ({exc}); choose another --metrics-port "
                "(0 = any free port)"
            ) from exc
        bound_port = self._server.server_address[1]
        self.url = f"http://{host}:{bound_port}/metrics"

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
