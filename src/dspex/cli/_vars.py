"""``dspex vars list|get|set|watch|history|rollback|depend|dependents|deps|lock|unlock|progress
--store ADDRESS --session ID [--json]``.

Reads and changes the variables of one session in a session store, with the same verbs as the
Python API. Records show whether they are stale and who holds their optimization lock.
``--json`` prints machine-readable JSON (one object per line for ``watch``). An unreachable
store gives a one-line error and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dspex._model import VariableRecord, VariableUpdate
from dspex.cli._deps import add_actions as add_dependency_actions
from dspex.cli._format import jsonable, record_json, record_line
from dspex.cli._locks import add_actions as add_lock_actions
from dspex.cli._types import int_at_least, positive_seconds

__all__ = [
    "TOKEN_ENV",
    "add_parser",
    "follow",
    "jsonable",
    "open_store",
    "record_json",
    "store_options",
]

TOKEN_ENV = "DSPEX_TOKEN"
"""Environment variable read when ``--token`` is not given (server and clients)."""
_RAW_STRING_TYPES = ("string", "module")


def store_options() -> argparse.ArgumentParser:
    """A parent parser with ``--store``, ``--token``, ``--timeout`` and ``--json``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--store",
        required=True,
        metavar="ADDRESS",
        help="grpc://HOST:PORT, grpcs://HOST:PORT (TLS) or unix:PATH",
    )
    parent.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token (${TOKEN_ENV})"
    )
    parent.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds per call (default: %(default)s)",
    )
    parent.add_argument("--json", action="store_true", help="print JSON")
    parent.add_argument(
        "--tls-ca", metavar="PEM", help="with grpcs://: root certificate to trust ($DSPEX_TLS_CA)"
    )
    parent.add_argument(
        "--tls-cert", metavar="PEM", help="client certificate for mutual TLS ($DSPEX_TLS_CERT)"
    )
    parent.add_argument(
        "--tls-key", metavar="PEM", help="private key of --tls-cert ($DSPEX_TLS_KEY)"
    )
    return parent


def add_parser(subparsers: Any) -> None:
    """Register the ``vars`` sub-command and its actions."""
    parent = store_options()
    parent.add_argument("--session", required=True, metavar="ID", help="the session id")
    parser = subparsers.add_parser(
        "vars", help="list, read, change, watch and roll back variables in a session store"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[parent], help="variables matching a glob")
    listing.add_argument("pattern", nargs="?", default="*")
    listing.set_defaults(func=_list)
    get = actions.add_parser("get", parents=[parent], help="one variable's current record")
    get.add_argument("name")
    get.set_defaults(func=_get)
    setter = actions.add_parser(
        "set", parents=[parent], help="store a new value (JSON; plain text for strings)"
    )
    setter.add_argument("name")
    setter.add_argument("value")
    setter.add_argument("--expected-version", type=int_at_least(1), default=None)
    setter.set_defaults(func=_set)
    watch = actions.add_parser("watch", parents=[parent], help="print changes as they happen")
    watch.add_argument("names", nargs="*", metavar="NAME")
    watch.add_argument("--after-revision", type=int_at_least(0), default=None)
    watch.add_argument("--initial", action="store_true", help="print current values first")
    watch.add_argument("--count", type=int_at_least(1), default=None, help="stop after N updates")
    watch.add_argument(
        "--timeout-after", type=positive_seconds, default=None, help="stop after S seconds"
    )
    watch.set_defaults(func=_watch)
    history = actions.add_parser("history", parents=[parent], help="kept versions, oldest first")
    history.add_argument("name")
    history.add_argument("--limit", type=int_at_least(1), default=None)
    history.set_defaults(func=_history)
    rollback = actions.add_parser(
        "rollback", parents=[parent], help="write an earlier version's value as a new version"
    )
    rollback.add_argument("name")
    rollback.add_argument("version", type=int_at_least(1))
    rollback.set_defaults(func=_rollback)
    add_dependency_actions(actions, parent)
    add_lock_actions(actions, parent)


@contextmanager
def open_store(args: argparse.Namespace) -> Iterator[Any]:
    """A connected SessionStoreProvider for ``--store`` (closed afterwards)."""
    from dspex.state.client.connect import open_store as open_provider

    provider = open_provider(
        args.store,
        token=args.token,
        timeout=args.timeout,
        root_cert=args.tls_ca,
        client_cert=args.tls_cert,
        client_key=args.tls_key,
    )
    try:
        yield provider
    finally:
        provider.close()


def _show_record(record: VariableRecord, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record_json(record)))
    else:
        print(record_line(record))


def _show_records(records: Sequence[VariableRecord], as_json: bool) -> None:
    """Print ``records`` as one JSON list, or one line each."""
    if as_json:
        print(json.dumps([record_json(r) for r in records]))
    else:
        for record in records:
            print(record_line(record))


def _list(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        records = store.list_variables(args.session, args.pattern)
    _show_records(records, args.json)
    return 0


def _get(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        _show_record(store.get_variable(args.session, args.name), args.json)
    return 0


def parse_value(text: str, type_name: str) -> Any:
    """The value ``text`` stands for: plain text for string types, JSON otherwise."""
    if type_name in _RAW_STRING_TYPES:
        return text
    try:
        return json.loads(text)
    except ValueError:
        if type_name == "choice":
            return text
        from dspex.errors import VariableValueError

        raise VariableValueError(
            f"{text!r} is not JSON; give the value as JSON for a {type_name} variable "
            "(e.g. 0.5, true, [1, 2], '{\"k\": 1}')"
        ) from None


def _set(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        current = store.get_variable(args.session, args.name)
        value = parse_value(args.value, current.type)
        record = store.set_variable(
            args.session, args.name, value, expected_version=args.expected_version
        )
    _show_record(record, args.json)
    return 0


def _history(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        records = store.get_history(args.session, args.name, args.limit)
    _show_records(records, args.json)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        _show_record(store.rollback_variable(args.session, args.name, args.version), args.json)
    return 0


def _watch(args: argparse.Namespace) -> int:
    with (
        open_store(args) as store,
        store.watch_variables(
            args.session,
            args.names,
            after_revision=args.after_revision,
            include_initial=args.initial,
        ) as updates,
    ):
        for update in follow(updates, args):
            _show_update(update, args.json)
    return 0


def follow(
    updates: Any, args: argparse.Namespace, wanted: Callable[[VariableUpdate], bool] | None = None
) -> Iterator[VariableUpdate]:
    """The ``wanted`` updates of a watch, until ``--count`` of them or ``--timeout-after``."""
    deadline = None if args.timeout_after is None else time.monotonic() + args.timeout_after
    seen = 0
    while args.count is None or seen < args.count:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        update = updates.poll(timeout=1.0 if left is None else min(left, 1.0))
        if update is None:
            if updates.closed:
                return
            continue
        if wanted is None or wanted(update):
            seen += 1
            yield update


def _show_update(update: VariableUpdate, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {**record_json(update.record), "revision": update.revision, "kind": update.kind}
            )
        )
    else:
        print(f"rev {update.revision} {update.kind} {record_line(update.record)}")
    sys.stdout.flush()
