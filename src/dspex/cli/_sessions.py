"""``dspex sessions list|create|close --store ADDRESS [--json]``: the sessions of a store."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dspex._model import SessionInfo
from dspex.cli._types import positive_seconds
from dspex.cli._vars import open_store, store_options

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Register the ``sessions`` sub-command and its actions."""
    parent = store_options()
    parser = subparsers.add_parser("sessions", help="list, create and close sessions of a store")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[parent], help="every open session")
    listing.set_defaults(func=_list)
    create = actions.add_parser("create", parents=[parent], help="create (or join) a session")
    create.add_argument("--session", default=None, metavar="ID", help="id (default: random)")
    create.add_argument(
        "--ttl",
        type=positive_seconds,
        default=None,
        help="seconds without heartbeat",
    )
    create.set_defaults(func=_create)
    close = actions.add_parser("close", parents=[parent], help="close a session")
    close.add_argument("--session", required=True, metavar="ID")
    close.set_defaults(func=_close)


def _info_json(info: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": info.session_id,
        "created_at": info.created_at,
        "revision": info.revision,
        "variable_count": info.variable_count,
        "last_heartbeat": info.last_heartbeat,
        "ttl": info.ttl,
        "owner": info.owner,
    }


def _list(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        infos = store.list_sessions()
    if args.json:
        print(json.dumps([_info_json(i) for i in infos]))
        return 0
    for info in infos:
        owner = f"  owner {info.owner}" if info.owner else ""
        ttl = f"  ttl {info.ttl:g}s" if info.ttl is not None else ""
        print(
            f"{info.session_id}  {info.variable_count} variables  revision {info.revision}"
            f"{ttl}{owner}"
        )
    if not infos:
        print("(no sessions)")
    return 0


def _create(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        session_id = store.create_session(args.session, ttl=args.ttl)
    print(json.dumps({"session_id": session_id}) if args.json else session_id)
    return 0


def _close(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        store.close_session(args.session)
    print(json.dumps({"closed": args.session}) if args.json else f"closed {args.session}")
    return 0
