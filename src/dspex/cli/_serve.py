"""``dspex serve``: run a session store server in the foreground until SIGTERM or Ctrl-C.

Prints the address it listens on (one line, flushed) so scripts can read it; ``--address
127.0.0.1:0`` picks a free port. The store imports grpc only when this command runs.

Where sessions live: in memory (the default: gone when the server stops), in a SQLite data
directory (``--data DIR``: survives restarts and ``kill -9``; one server per directory) or in
Redis (``--redis URL``: several servers share the same sessions). A data directory or Redis
that cannot be used is reported in one line and the command exits 1 before listening.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING, Any

import dspex.errors as errors
from dspex import _tracing
from dspex.cli import _observe
from dspex.cli._dashboard import BesideStore, add_serve_options
from dspex.cli._serve_options import add_hardening_options, provider_limits, server_security
from dspex.cli._vars import TOKEN_ENV

if TYPE_CHECKING:
    from dspex.state.engines import Engine

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
    engine = parser.add_mutually_exclusive_group()
    engine.add_argument(
        "--data",
        metavar="DIR",
        help="keep sessions durably in DIR (SQLite, WAL; created if missing): acknowledged "
        "writes survive restarts and kill -9. One server per directory",
    )
    engine.add_argument(
        "--redis",
        metavar="URL",
        help="keep sessions in Redis at URL (redis://[:PASSWORD@]HOST:PORT/N, rediss://, "
        "unix://PATH) so several servers share them (default: in memory)",
    )
    parser.add_argument(
        "--redis-prefix",
        default="dspex",
        help="Redis key prefix; servers sharing sessions use the same one (default: %(default)s)",
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="with --data: flush every write to disk so it also survives an OS crash or power "
        "loss (slower)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"require this bearer token, allowed everything (default: ${TOKEN_ENV} unless "
        "--auth-file is given)",
    )
    parser.add_argument(
        "--max-request-bytes",
        "--max-message-bytes",
        dest="max_message_bytes",
        type=int,
        default=32 * 1024 * 1024,
        help="largest request accepted (default: %(default)s)",
    )
    parser.add_argument(
        "--max-value-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="largest single value (default: %(default)s)",
    )
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
    parser.add_argument(
        "--snakepit-compat",
        action="store_true",
        help="also serve snakepit.bridge.BridgeService, the original Elixir/Python bridge's "
        "protocol, over the same sessions (docs/protocol.md)",
    )
    add_hardening_options(parser)
    add_serve_options(parser)
    _observe.add_serve_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until a signal arrives; exit code 0 after a graceful shutdown."""
    from dspex.state import LocalProvider
    from dspex.state.store import StoreLimits, serve

    # A bad auth file, TLS file, data directory, Redis or metrics port raises here, before the
    # store listens: the error becomes one line on stderr and exit code 1 (see dspex.cli.main).
    dashboard = BesideStore.from_args(args)
    security = server_security(args)
    _tracing.configure_from_env("dspex-serve")
    limits = StoreLimits(
        max_message_bytes=args.max_message_bytes,
        max_value_bytes=args.max_value_bytes,
        heartbeat_interval=args.heartbeat,
        session_ttl=args.session_ttl,
        snakepit_compat=args.snakepit_compat,
    )

    def ready(address: str) -> None:
        print(f"dspex session store listening on {address}", flush=True)
        if dashboard is not None:
            dashboard.start(address)

    with contextlib.ExitStack() as cleanup:  # closed in reverse: provider, engine, metrics
        observed = _observe.open_metrics(args)
        metrics = None
        if observed is not None:
            metrics, endpoint = observed
            cleanup.callback(endpoint.stop)
        engine, where = _open_engine(args)
        cleanup.callback(engine.close)  # releases the data directory's lock
        provider = LocalProvider(
            engine if metrics is None else metrics.timed(engine),
            watch_queue_size=args.watch_queue_size,
            **provider_limits(args),
        )
        cleanup.callback(provider.close)
        print(f"dspex session store: sessions kept {where}", file=sys.stderr, flush=True)
        if observed is not None:
            print(f"dspex metrics on {observed[1].url}", file=sys.stderr, flush=True)
        try:
            serve(
                args.address,
                provider=provider,
                token=args.token,
                limits=limits,
                **security,
                metrics=metrics,
                grace=args.grace,
                on_ready=ready,
            )
        finally:
            if dashboard is not None:
                dashboard.stop()
    print("dspex session store stopped", file=sys.stderr, flush=True)
    return 1 if dashboard is not None and dashboard.failed else 0


def _open_engine(args: argparse.Namespace) -> tuple[Engine, str]:
    """The engine the flags name (SQLite for ``--data``, Redis for ``--redis``, else memory)
    and where it keeps sessions, for the start-up line.

    Raises:
        StoreDataError: the data directory is unusable, locked, full or from a newer dspex.
        StoreUnavailableError: Redis cannot be reached.
    """
    from dspex.state.engines import MemoryEngine, RedisEngine, SQLiteEngine

    sizes = {"history_size": args.history_size, "log_size": args.log_size}
    if args.fsync and args.data is None:
        raise errors.StoreError("--fsync needs --data DIR (it flushes the SQLite data file)")
    if args.data is not None:
        sqlite = SQLiteEngine(args.data, fsync=args.fsync, **sizes)
        return sqlite, f"durably in {sqlite.directory} (SQLite)"
    if args.redis is not None:
        shared = RedisEngine(args.redis, prefix=args.redis_prefix, **sizes)
        return shared, f"in Redis (key prefix {shared.prefix!r}), shared with other servers"
    return MemoryEngine(**sizes), "in memory (lost when it stops; --data DIR keeps them)"
