"""``dspex vars lock|unlock|progress``: show and manage optimization locks from the shell.

``lock NAME...`` takes the locks as ``--optimizer-id`` (with ``--policy fail|wait|preempt``)
and holds them, renewing the lease, until ``--hold`` seconds pass, Ctrl-C or SIGTERM; then
releases them (a killed ``lock`` loses them when its connection drops). ``unlock NAME...``
takes over whatever lock is held (a preempt) and releases it, for an operator clearing an
optimizer that is stuck. ``progress [NAME...]`` prints who holds which lock and the progress the
holder published; ``--follow`` prints every change of them as it happens.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dspex._model import VariableRecord
from dspex.cli._format import lock_json
from dspex.cli._types import int_at_least, positive_seconds, seconds_at_least

__all__ = ["add_actions"]


def add_actions(actions: Any, parent: argparse.ArgumentParser) -> None:
    """Register the lock actions on the ``vars`` sub-command."""
    lock = actions.add_parser(
        "lock", parents=[parent], help="hold optimization locks until --hold ends or Ctrl-C"
    )
    lock.add_argument("names", nargs="+", metavar="NAME")
    lock.add_argument("--optimizer-id", default="cli", help="the holder's name (default: cli)")
    lock.add_argument("--policy", choices=("fail", "wait", "preempt"), default="fail")
    lock.add_argument(
        "--lock-timeout", type=seconds_at_least(0.0), default=None, help="with --policy wait"
    )
    lock.add_argument(
        "--lease", type=positive_seconds, default=30.0, help="seconds, renewed while held"
    )
    lock.add_argument(
        "--hold", type=seconds_at_least(0.0), default=None, help="release after S seconds"
    )
    lock.set_defaults(func=_lock)
    unlock = actions.add_parser(
        "unlock", parents=[parent], help="take over and release the locks (operator override)"
    )
    unlock.add_argument("names", nargs="+", metavar="NAME")
    unlock.set_defaults(func=_unlock)
    progress = actions.add_parser(
        "progress", parents=[parent], help="who holds which lock, and the published progress"
    )
    progress.add_argument("names", nargs="*", metavar="NAME")
    progress.add_argument("--follow", action="store_true", help="print changes as they happen")
    progress.add_argument(
        "--count", type=int_at_least(1), default=None, help="with --follow: stop after N"
    )
    progress.add_argument(
        "--timeout-after", type=positive_seconds, default=None, help="stop after S s"
    )
    progress.set_defaults(func=_progress)


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[Any]:
    """The session verbs over a store client for ``--store``/``--session``."""
    from dspex.cli._vars import open_store
    from dspex.state import SessionContext

    with open_store(args) as store:
        yield SessionContext(store, args.session)


def _lock_line(record: VariableRecord, as_json: bool) -> str:
    lock = lock_json(record.lock)
    if as_json:
        return json.dumps({"name": record.name, "revision": record.revision, "lock": lock})
    if lock is None:
        return f"{record.name}: not locked"
    left = max(0.0, float(lock.get("expires_at", 0.0)) - time.time())
    line = f"{record.name}: locked by {lock.get('optimizer_id')!r}, lease {left:.0f}s left"
    progress = lock.get("progress") or {}
    return line + (f", progress {json.dumps(progress, sort_keys=True)}" if progress else "")


def _lock(args: argparse.Namespace) -> int:
    # SIGTERM ends the hold like --hold does, so the locks are released, not left to expire.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with (
        _session(args) as session,
        session.optimizing(
            *args.names, optimizer_id=args.optimizer_id, lease=args.lease,
            policy=args.policy, timeout=args.lock_timeout,
        ) as lock,
    ):  # fmt: skip
        for record in lock.records():
            print(_lock_line(record, args.json), flush=True)
        _hold(args.hold, stop)
    if not args.json:
        print(f"released {', '.join(sorted(args.names))}", flush=True)
    return 0


def _hold(seconds: float | None, stop: threading.Event) -> None:
    """Wait ``seconds`` (forever when None) or until ``stop``, in short steps (for Ctrl-C)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while not stop.is_set():
        left = 0.2 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return
        stop.wait(min(0.2, left))


def _unlock(args: argparse.Namespace) -> int:
    with _session(args) as session:
        for name in args.names:
            held = session.variable(name).lock
            if held is None:
                print(_lock_line(session.variable(name), args.json))
                continue
            with session.optimizing(name, optimizer_id="cli-unlock", policy="preempt"):
                pass  # taken over, then released on leaving
            if args.json:
                print(json.dumps({"name": name, "released": held.get("optimizer_id")}))
            else:
                print(f"{name}: released the lock of {held.get('optimizer_id')!r}")
    return 0


def _progress(args: argparse.Namespace) -> int:
    with _session(args) as session:
        if not args.follow:
            records = [session.variable(n) for n in args.names] or session.list()
            for record in records:
                if args.names or record.lock is not None:
                    print(_lock_line(record, args.json))
            return 0
        _follow(session, args)
    return 0


def _follow(session: Any, args: argparse.Namespace) -> None:
    from dspex.cli._vars import follow

    with session.watch(*args.names, initial=True) as updates:
        for update in follow(updates, args, lambda u: u.kind in ("lock", "initial")):
            print(_lock_line(update.record, args.json), flush=True)
