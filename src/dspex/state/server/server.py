"""Server side: running the store server in a background thread or in the foreground.

:class:`StoreServer` runs the ``grpc.aio`` server on its own event loop in a daemon thread (tests,
and promoting a local session). :func:`serve` runs it in the foreground until SIGTERM or SIGINT
(``dspex serve``). Both add grpc health checking and server reflection (which stay open when
access control is on), optional TLS and access control, and shut down gracefully: health turns
NOT_SERVING, watch streams end with "resume from revision N", and in-flight calls get
``grace`` seconds to finish. Given ``metrics``, every call is counted and timed; when the process
traces (see :mod:`dspex._tracing`), every call is a span.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypedDict, Unpack

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dspex import _tracing
from dspex._proto.bridge.v1 import store_pb2
from dspex.errors import DspexError, StoreError
from dspex.state.core.access import AccessPolicy
from dspex.state.core.contract import StateProvider
from dspex.state.core.semantics import EngineProvider
from dspex.state.server import convert as server_convert
from dspex.state.server.guard import AccessGuard
from dspex.state.server.handlers import register_service
from dspex.state.server.observe import CallObserver
from dspex.state.server.reflection import enable_reflection
from dspex.state.server.servicer import SessionStoreServicer, StoreLimits
from dspex.state.server.snakepit import SNAKEPIT_SERVICE, add_snakepit
from dspex.state.server.tools import ToolStoreServicer, add_tool_store
from dspex.state.wire.channel import StoreAddress, parse_address, server_options
from dspex.state.wire.tls import ServerTls
from dspex.state.wire.tools import SERVICE_NAME as TOOLS_SERVICE_NAME

if TYPE_CHECKING:
    from dspex.state.server.metrics import ServerMetrics

__all__ = ["SERVICE_NAME", "ServerOptions", "StoreServer", "serve"]

SERVICE_NAME: Final[str] = store_pb2.DESCRIPTOR.services_by_name["SessionStore"].full_name


class ServerOptions(TypedDict, total=False):
    """What a store server is run with, besides its provider and address (every key optional).

    Keys:
        token: if given, every store call must carry this bearer token (full access).
        auth: access control: tokens, principals and permission rules (not with ``token``).
        tls: serve TLS with this certificate and key (``grpcs://`` addresses).
        limits: input limits, the watch heartbeat interval and the default session TTL.
        metrics: count calls and state into these Prometheus metrics.
    """

    token: str | None
    auth: AccessPolicy | None
    tls: ServerTls | None
    limits: StoreLimits | None
    metrics: ServerMetrics | None


def _policy(token: str | None, auth: AccessPolicy | None) -> AccessPolicy | None:
    """The access policy in force: ``auth``, or one principal allowed everything for ``token``.

    Raises:
        StoreError: both were given.
    """
    if token and auth is not None:
        raise StoreError("give either a single token or an auth policy (--auth-file), not both")
    return AccessPolicy.for_token(token) if token else auth


class _Running:
    """One started aio server with its servicer and health state."""

    def __init__(
        self, server: Any, servicer: SessionStoreServicer, health_servicer: Any, url: str
    ) -> None:
        self.server = server
        self.servicer = servicer
        self.health = health_servicer
        self.url = url
        self.tools: ToolStoreServicer | None = None

    async def stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        self.servicer.begin_shutdown()
        if self.tools is not None:
            self.tools.begin_shutdown()
        await self.server.stop(grace)
        self.servicer.close()
        if self.url.startswith("unix://"):
            with contextlib.suppress(OSError):
                os.unlink(self.url[len("unix://") :])


def _register(servicer: SessionStoreServicer, server: Any, observers: list[CallObserver]) -> None:
    """Add every SessionStore RPC of ``servicer`` to ``server``, seen by ``observers``."""
    register_service(server, SERVICE_NAME, servicer, server_convert.method_table(), observers)


def _observers(metrics: ServerMetrics | None) -> list[CallObserver]:
    """What watches every call: the metrics, and a span per call when the process traces."""
    observers: list[CallObserver] = [] if metrics is None else [metrics]
    if _tracing.enabled():
        from dspex.state.server.tracing import TracingObserver

        observers.append(TracingObserver())
    return observers


async def _start(
    provider: StateProvider,
    address: StoreAddress,
    limits: StoreLimits,
    policy: AccessPolicy | None,
    tls: ServerTls | None,
    *,
    metrics: ServerMetrics | None = None,
) -> _Running:
    server = grpc.aio.server(
        options=server_options(limits.max_message_bytes),
        maximum_concurrent_rpcs=limits.max_concurrent_calls,
    )
    observers = _observers(metrics)
    guard = None if policy is None else AccessGuard(policy, provider)
    servicer = SessionStoreServicer(provider, limits, guard=guard, events=metrics)
    if metrics is not None:
        metrics.watch(servicer)
    _register(servicer, server, observers)
    tools = ToolStoreServicer(servicer)
    add_tool_store(tools, server, observers)
    services = [SERVICE_NAME, TOOLS_SERVICE_NAME]
    if limits.snakepit_compat:
        add_snakepit(server, servicer, tools, observers)
        services.append(SNAKEPIT_SERVICE)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    enable_reflection(server, (*services, health.SERVICE_NAME))
    url = _bind(server, address, tls)
    await server.start()
    running = _Running(server, servicer, health_servicer, url)
    running.tools = tools
    return running


def _bind(server: Any, address: StoreAddress, tls: ServerTls | None) -> str:
    cause: Exception | None = None
    try:
        if tls is not None:
            port = server.add_secure_port(address.target, tls.credentials())
        else:
            port = server.add_insecure_port(address.target)
    except RuntimeError as exc:
        port, cause = 0, exc
    if not port:
        raise StoreError(
            f"cannot listen on {address.url}: the address is in use or not permitted ({cause}); "
            "choose another address or port 0",
            address=address.url,
        )
    if address.is_unix:
        return address.url
    host = address.target.rpartition(":")[0]
    return f"{'grpcs' if tls is not None else 'grpc'}://{host}:{port}"


class StoreServer:
    """A session-store server running in a background thread with its own event loop.

    Args:
        provider: the provider to serve (a new :class:`EngineProvider` when None).
        address: where to listen; port 0 picks a free port (read it back from ``address``).
        options: ``token``, ``auth``, ``tls``, ``limits``, ``metrics`` (see
            :class:`ServerOptions`).

    Examples:
        >>> with StoreServer.start(address="127.0.0.1:0") as server:  # doctest: +SKIP
        ...     SessionStoreProvider(server.address).create_session()
    """

    def __init__(
        self,
        provider: StateProvider | None = None,
        address: str = "127.0.0.1:0",
        **options: Unpack[ServerOptions],
    ) -> None:
        self.provider: StateProvider = provider if provider is not None else EngineProvider()
        self._address = parse_address(address)
        self._policy = _policy(options.get("token"), options.get("auth"))
        self._tls = options.get("tls")
        self._limits = options.get("limits") or StoreLimits()
        self._metrics = options.get("metrics")
        self._loop = asyncio.new_event_loop()
        self._running: _Running | None = None
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="dspex-store-server", daemon=True)

    @classmethod
    def start(
        cls,
        provider: StateProvider | None = None,
        address: str = "127.0.0.1:0",
        *,
        timeout: float = 10.0,
        **options: Unpack[ServerOptions],
    ) -> StoreServer:
        """Start a server (arguments as for the constructor) and return once it listens.

        Raises:
            StoreError: it could not listen on ``address`` within ``timeout`` seconds, or
                both ``token`` and ``auth`` were given.
        """
        server = cls(provider, address, **options)
        server._thread.start()
        if not server._ready.wait(timeout):
            raise StoreError(f"the store server did not start within {timeout:g} s")
        if server._failure is not None:
            server._thread.join(timeout)
            raise server._failure
        return server

    @property
    def address(self) -> str:
        """The address clients connect to (``grpc://host:port`` or ``unix:///path``)."""
        if self._running is None:
            raise StoreError("the store server is not running")
        return self._running.url

    @property
    def watch_count(self) -> int:
        """Number of open watch streams."""
        return 0 if self._running is None else self._running.servicer.watch_count

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            self._running = await _start(
                self.provider,
                self._address,
                self._limits,
                self._policy,
                self._tls,
                metrics=self._metrics,
            )
        except BaseException as exc:
            self._failure = exc if isinstance(exc, DspexError) else StoreError(str(exc))
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self._running.stop(self._grace)

    _grace: float = 1.0

    def stop(self, grace: float = 1.0, timeout: float = 10.0) -> None:
        """Stop listening; in-flight calls get ``grace`` seconds. Idempotent."""
        if not self._thread.is_alive() or self._stop is None:
            return
        self._grace = grace
        with contextlib.suppress(RuntimeError):  # the loop already closed
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout + grace)

    def __enter__(self) -> StoreServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(
    address: str = "127.0.0.1:50051",
    *,
    provider: StateProvider | None = None,
    token: str | None = None,
    auth: AccessPolicy | None = None,
    tls: ServerTls | None = None,
    limits: StoreLimits | None = None,
    metrics: ServerMetrics | None = None,
    grace: float = 5.0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run a store server in the foreground until SIGTERM or SIGINT, then stop gracefully.

    Args:
        address: where to listen (``host:port``, ``grpc://host:port`` or ``unix:PATH``).
        provider: the provider to serve (a new :class:`EngineProvider` when None).
        token: if given, every store call must carry this bearer token (full access).
        auth: access control: tokens, principals and permission rules (not with ``token``).
        tls: serve TLS with this certificate and key.
        limits: input limits, the watch heartbeat interval and the default session TTL.
        metrics: count calls and state into these Prometheus metrics (``dspex serve
            --metrics-port``; its engine is wrapped with ``metrics.timed``).
        grace: seconds in-flight calls get to finish on shutdown.
        on_ready: called with the listening address once the server accepts calls.

    Raises:
        StoreError: the address cannot be used, or both ``token`` and ``auth`` were given.
    """
    parsed = parse_address(address)
    policy = _policy(token, auth)
    served = provider if provider is not None else EngineProvider()

    async def main() -> None:
        running = await _start(
            served, parsed, limits or StoreLimits(), policy, tls, metrics=metrics
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if on_ready is not None:
            on_ready(running.url)
        await stop.wait()
        await running.stop(grace)

    asyncio.run(main())
