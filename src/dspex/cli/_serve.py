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
from dspex.cli._serve_options import (
    MIN_HEARTBEAT,
    add_hardening_options,
    check_address,
    check_exposure,
    check_sizes,
    provider_limits,
    server_security,
)
from dspex.cli._types import int_at_least, seconds_at_least

if TYPE_CHECKING:
    from dspex.state.engines import Engine

__all__ = ["add_parser"]

_BYTE_FLAGS = (
    ("--history-bytes", "bytes of values kept per variable's history (the current version is "
     "always kept; default: 256 MiB)"),
    ("--log-bytes", "bytes of values kept per session's change log (default: 1 GiB)"),
    ("--max-session-bytes", "budget on the bytes of values kept (every kept version) in one "
     "session: a write past it is refused with RESOURCE_EXHAUSTED (default: none)"),
    ("--max-store-bytes", "the same budget for the whole store; servers sharing one Redis "
     "share it (default: none)"),
)  # fmt: skip
"""Byte bounds of every engine (with --redis, kept in Redis: one budget for all servers)."""


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
        "--accept-data-loss",
        action="store_true",
        help="with --data: start even though the data file lost acknowledged writes (damaged "
        "or deleted WAL, restored copy), as a new store generation; lost revisions are never "
        "reused and clients resuming from them get an error (default: refuse to start)",
    )
    parser.add_argument(
        "--max-request-bytes",
        "--max-message-bytes",
        dest="max_message_bytes",
        metavar="N",
        type=int_at_least(1024),
        default=32 * 1024 * 1024,
        help="largest request accepted, at least 1024 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-value-bytes",
        type=int_at_least(1),
        default=16 * 1024 * 1024,
        help="largest single value, at most --max-request-bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--heartbeat",
        type=seconds_at_least(MIN_HEARTBEAT),
        default=15.0,
        help=f"seconds between idle watch heartbeats, at least {MIN_HEARTBEAT} "
        "(default: %(default)s)",
    )
    _add_count(parser, "--history-size", 100, "versions kept per variable")
    _add_count(parser, "--log-size", 10_000, "changes kept per session for watch resume")
    for flag, what in _BYTE_FLAGS:
        parser.add_argument(
            flag,
            type=int_at_least(1024),
            default=None,
            metavar="N",
            help=f"{what}; at least 1024",
        )
    _add_count(parser, "--watch-queue-size", 1024, "pending updates per watcher")
    parser.add_argument(
        "--grace",
        type=seconds_at_least(0.0),
        default=5.0,
        help="seconds in-flight calls get on shutdown, 0 or more (default: %(default)s)",
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


def _add_count(parser: argparse.ArgumentParser, flag: str, default: int, what: str) -> None:
    """Add ``flag``: a whole number of ``what``, at least 1."""
    parser.add_argument(
        flag,
        type=int_at_least(1),
        default=default,
        help=f"{what}, at least 1 (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until a signal arrives; exit code 0 after a graceful shutdown."""
    from dspex.state import LocalProvider
    from dspex.state.store import StoreLimits, serve

    # A bad auth file, TLS file, data directory, Redis or metrics port raises here, before the
    # store listens: the error becomes one line on stderr and exit code 1 (see dspex.cli.main).
    check_sizes(args)
    check_address(args)
    dashboard = BesideStore.from_args(args)
    security = server_security(args)
    check_exposure(args, security)
    _tracing.configure_from_env("dspex-serve")
    limits = StoreLimits(
        max_message_bytes=args.max_message_bytes,
        max_value_bytes=args.max_value_bytes,
        heartbeat_interval=args.heartbeat,
        session_ttl=args.session_ttl,
        max_concurrent_calls=args.max_concurrent_calls,
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

    sizes: dict[str, int] = {"history_size": args.history_size, "log_size": args.log_size}
    byte_bounds = {
        "history_bytes": args.history_bytes,
        "log_bytes": args.log_bytes,
        "max_session_bytes": args.max_session_bytes,
        "max_store_bytes": args.max_store_bytes,
    }
    given = {name: value for name, value in byte_bounds.items() if value is not None}
    if args.fsync and args.data is None:
        raise errors.StoreError("--fsync needs --data DIR (it flushes the SQLite data file)")
    if args.accept_data_loss and args.data is None:
        raise errors.StoreError("--accept-data-loss needs --data DIR")
    if args.data is not None:
        sqlite = SQLiteEngine(
            args.data, fsync=args.fsync, accept_loss=args.accept_data_loss, **sizes, **given
        )
        if sqlite.lost:
            print(
                f"dspex serve: warning: {sqlite.path} had lost acknowledged writes; started "
                f"store generation {sqlite.generation}, skipping {sqlite.lost} revisions in "
                "every session",
                file=sys.stderr,
                flush=True,
            )
        return sqlite, f"durably in {sqlite.directory} (SQLite)"
    if args.redis is not None:
        shared = RedisEngine(args.redis, prefix=args.redis_prefix, **sizes, **given)
        return shared, f"in Redis (key prefix {shared.prefix!r}), shared with other servers"
    return MemoryEngine(**sizes, **given), "in memory (lost when it stops; --data DIR keeps them)"
