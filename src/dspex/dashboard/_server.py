"""Running the dashboard's web server (uvicorn): in the foreground, or in a background thread.

The listening socket is bound before uvicorn starts, so port 0 picks a free port and the URL
is known (and printed) at once, and a port in use is one clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator

import uvicorn

from dspex.dashboard._app import Dashboard
from dspex.errors import StoreError
from dspex.state import StateProvider

__all__ = ["DashboardServer", "serve_dashboard"]

_GRACE_SECONDS = 1
_START_TIMEOUT = 10.0


def _bind(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise StoreError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "choose another port (0 picks a free one)"
        ) from exc


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class _Uvicorn(uvicorn.Server):
    """uvicorn that ends the dashboard's event streams first when it shuts down, so open pages
    get an ``end`` event and the server stops at once instead of cutting them off later."""

    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__(
            uvicorn.Config(
                dashboard.app,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=_GRACE_SECONDS,
            )
        )
        self.dashboard = dashboard

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.dashboard.close_feeds()
        await super().shutdown(sockets)


def _check_store(provider: StateProvider) -> None:
    """Fail before listening when the store is unreachable or refuses the token."""
    provider.list_sessions()


def serve_dashboard(
    provider: StateProvider,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    read_only: bool = False,
    sessions: Iterable[str] = (),
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard in the foreground until SIGINT or SIGTERM.

    Args:
        provider: the store client whose token decides what the page shows (not closed here).
        host, port: where to listen (``port=0``: any free port).
        read_only: never offer rollback.
        sessions: session ids to offer even when the store does not list them.
        on_ready: called with the page's URL once it listens.

    Raises:
        StoreError: the port cannot be used. UnauthenticatedError, StoreUnavailableError:
            the store refuses the token or cannot be reached.
    """
    _check_store(provider)
    dashboard = Dashboard(provider, read_only=read_only, sessions=sessions)
    sock = _bind(host, port)
    with sock, _signals_end_serving():
        if on_ready is not None:
            on_ready(_url(sock))
        asyncio.run(_Uvicorn(dashboard).serve(sockets=[sock]))


@contextlib.contextmanager
def _signals_end_serving() -> Iterator[None]:
    """Make SIGTERM/SIGINT end serving and return normally (exit code 0, like ``dspex serve``).

    uvicorn stops on these signals, then raises the signal again for the handler that was in
    place before it started: that handler is a no-op here, so the process does not die of it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class DashboardServer:
    """The dashboard served from a background thread (beside ``dspex serve``, and in tests).

    Examples:
        >>> server = DashboardServer.start(provider, port=0)  # doctest: +SKIP
        >>> print(server.url)  # doctest: +SKIP
        http://127.0.0.1:41235/
        >>> server.stop()  # doctest: +SKIP
    """

    def __init__(self, dashboard: Dashboard, sock: socket.socket) -> None:
        self.dashboard = dashboard
        self.url = _url(sock)
        self._sock = sock
        self._server = _Uvicorn(dashboard)
        self._thread = threading.Thread(target=self._run, name="dspex-dashboard", daemon=True)

    @classmethod
    def start(
        cls,
        provider: StateProvider,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        read_only: bool = False,
        sessions: Iterable[str] = (),
    ) -> DashboardServer:
        """Start serving; returns once the page accepts connections (see :attr:`url`).

        Raises the same errors as :func:`serve_dashboard`.
        """
        _check_store(provider)
        server = cls(
            Dashboard(provider, read_only=read_only, sessions=sessions), _bind(host, port)
        )
        server._thread.start()
        server._wait_started()
        return server

    def _run(self) -> None:
        with self._sock:
            asyncio.run(self._server.serve(sockets=[self._sock]))

    def _wait_started(self) -> None:
        waited = 0.0
        while not self._server.started and self._thread.is_alive() and waited < _START_TIMEOUT:
            threading.Event().wait(0.01)
            waited += 0.01
        if not self._server.started:
            self.stop()
            raise StoreError("the dashboard's web server did not start; see its log above")

    def stop(self) -> None:
        """End the live streams and stop the web server (the store client stays open)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(_GRACE_SECONDS + 5.0)
