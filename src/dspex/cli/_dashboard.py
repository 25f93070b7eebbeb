"""``dspex dashboard --store ADDRESS [--token T] [--port 8080]``: the live web page of a store.

Prints the page's URL (one line, flushed; ``{"url": ...}`` with ``--json``) once it listens,
and serves until SIGTERM or Ctrl-C. Needs the optional extra ``dspex[dashboard]`` (Starlette,
uvicorn, plotly); without it the command says so in one line. ``dspex serve --dashboard-port
N`` serves the same page beside a store (see :class:`BesideStore`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import dspex.errors as errors
from dspex.cli._types import port_number
from dspex.cli._vars import open_store, store_options

if TYPE_CHECKING:
    from dspex.dashboard import DashboardServer

__all__ = ["BesideStore", "add_parser", "add_serve_options"]

_EXTRA_HINT = "the dashboard needs the optional extra: pip install 'dspex[dashboard]'"


def add_parser(subparsers: Any) -> None:
    """Register the ``dashboard`` sub-command."""
    parser = subparsers.add_parser(
        "dashboard",
        parents=[store_options()],
        help="serve a live web page of a store's sessions, variables, history and optimizers",
        description="Serve a live web page of the sessions the token may observe. "
        "Read-only unless the token may write (then each variable offers a rollback).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port",
        type=port_number,
        default=8080,
        help="port to listen on; 0 = any free (%(default)s)",
    )
    parser.add_argument(
        "--session",
        action="append",
        default=[],
        metavar="ID",
        help="also offer this session (for a token that may observe but not read it); repeatable",
    )
    parser.add_argument(
        "--read-only", action="store_true", help="never offer rollback, whatever the token allows"
    )
    parser.set_defaults(func=run)


def _dashboard_module() -> Any:
    try:
        import dspex.dashboard as dashboard
    except ImportError as exc:
        raise errors.DspexError(f"{_EXTRA_HINT} ({exc})") from exc
    return dashboard


def run(args: argparse.Namespace) -> int:
    """Serve the page until a signal arrives; exit code 0 afterwards."""
    dashboard = _dashboard_module()

    def ready(url: str) -> None:
        print(json.dumps({"url": url}) if args.json else f"dspex dashboard on {url}", flush=True)

    with open_store(args) as provider:
        dashboard.serve_dashboard(
            provider,
            host=args.host,
            port=args.port,
            read_only=args.read_only,
            sessions=args.session,
            on_ready=ready,
        )
    return 0


class BesideStore:
    """The dashboard that ``dspex serve --dashboard-port`` runs as a client of its own store.

    It goes through the store's gRPC port like any client, so the store's access control
    applies to it (``--dashboard-token``, else ``--token``).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._thread: threading.Thread | None = None
        self._server: DashboardServer | None = None
        self._provider: Any = None
        self.failed = False
        """True when the dashboard could not start (the store was then asked to stop)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BesideStore | None:
        """The dashboard the flags ask for, or None; checked before the store listens.

        Raises:
            StoreError: ``--dashboard-port`` with TLS, or with ``--auth-file`` but no
                ``--dashboard-token`` (the page would have no principal to act as).
            DspexError: the ``dspex[dashboard]`` extra is not installed.
        """
        if args.dashboard_port is None:
            return None
        if args.auth_file is not None and args.dashboard_token is None:
            raise errors.StoreError(
                "--dashboard-port with --auth-file needs --dashboard-token: the token of the "
                "principal the page acts as (its rules decide what the page shows)"
            )
        if args.tls_cert is not None:
            raise errors.StoreError(
                "--dashboard-port cannot be combined with --tls-cert: run "
                "`dspex dashboard --store grpcs://HOST:PORT --tls-ca PEM` beside the server"
            )
        _dashboard_module()
        return cls(args)

    def start(self, address: str) -> None:
        """Start once the store listens at ``address``. Called on the store's event loop, so
        the dashboard (whose first call is to that store) starts from a thread of its own."""
        self._thread = threading.Thread(
            target=self._start, args=(address,), name="dspex-dashboard-start", daemon=True
        )
        self._thread.start()

    def _start(self, address: str) -> None:
        from dspex.state.store import SessionStoreProvider

        args = self._args
        self._provider = SessionStoreProvider(address, token=args.dashboard_token or args.token)
        try:
            self._server = _dashboard_module().DashboardServer.start(
                self._provider, host=args.dashboard_host, port=args.dashboard_port
            )
        except errors.DspexError as exc:
            print(f"dspex: error: dashboard: {exc}", file=sys.stderr, flush=True)
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)  # stop the store: the command failed
            return
        print(f"dspex dashboard on {self._server.url}", flush=True)

    def stop(self) -> None:
        """Stop the web server and close its store client."""
        if self._thread is not None:
            self._thread.join()
        if self._server is not None:
            self._server.stop()
        if self._provider is not None:
            self._provider.close()


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--dashboard-port`` (and the host and token it uses) to ``dspex serve``."""
    group = parser.add_argument_group("dashboard (needs dspex[dashboard])")
    group.add_argument(
        "--dashboard-port",
        type=port_number,
        default=None,
        metavar="N",
        help="also serve the live web dashboard on port N (0 = any free port)",
    )
    group.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the dashboard listens on (%(default)s)",
    )
    group.add_argument(
        "--dashboard-token",
        default=None,
        metavar="TOKEN",
        help="token the dashboard uses with the store (default: --token); with --auth-file, "
        "a principal's token decides what the page shows",
    )
