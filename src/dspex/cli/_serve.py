"""``dspex serve``: run a session store server in the foreground until SIGTERM or Ctrl-C.

Prints the address it listens on (one line, flushed) so scripts can read it; ``--address
127.0.0.1:0`` picks a free port. The store imports grpc only when this command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from dspex.cli._vars import TOKEN_ENV

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Register the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="run a session store server (gRPC) that sessions and workers connect to",
        description="Serve sessions over gRPC until SIGTERM or Ctrl-C (graceful shutdown). "
        "Clients use the printed address: dspex.Session(store=ADDRESS), "
        "dspex vars ... --store ADDRESS.",
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1:50051",
        help="HOST:PORT (port 0 = any free port), grpc://HOST:PORT or unix:PATH "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"require this bearer token (${TOKEN_ENV})",
    )
    parser.add_argument("--max-message-bytes", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--max-value-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument(
        "--heartbeat", type=float, default=15.0, help="seconds between idle watch heartbeats"
    )
    parser.add_argument("--history-size", type=int, default=100, help="versions kept per variable")
    parser.add_argument(
        "--log-size", type=int, default=10_000, help="changes kept per session for watch resume"
    )
    parser.add_argument(
        "--watch-queue-size", type=int, default=1024, help="pending updates per watcher"
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds in-flight calls get on shutdown"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until a signal arrives; exit code 0 after a graceful shutdown."""
    from dspex.state import LocalProvider
    from dspex.state.store import StoreLimits, serve

    provider = LocalProvider(
        history_size=args.history_size,
        log_size=args.log_size,
        watch_queue_size=args.watch_queue_size,
    )
    limits = StoreLimits(
        max_message_bytes=args.max_message_bytes,
        max_value_bytes=args.max_value_bytes,
        heartbeat_interval=args.heartbeat,
    )

    def ready(address: str) -> None:
        print(f"dspex session store listening on {address}", flush=True)

    serve(
        args.address,
        provider=provider,
        token=args.token,
        limits=limits,
        grace=args.grace,
        on_ready=ready,
    )
    print("dspex session store stopped", file=sys.stderr, flush=True)
    return 0
