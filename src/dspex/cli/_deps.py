"""``dspex vars depend|dependents|deps``: the dependency DAG of a session in a store.

``depend UP DOWN`` adds the edge (an edge closing a cycle is refused, naming the cycle);
``dependents NAME`` prints the transitive dependents in topological order; ``deps`` prints
every edge.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_actions"]


def add_actions(actions: Any, parent: argparse.ArgumentParser) -> None:
    """Register the dependency actions on the ``vars`` sub-command."""
    depend = actions.add_parser(
        "depend",
        parents=[parent],
        help="declare that DOWN derives from UP (marked stale on change)",
    )
    depend.add_argument("upstream", metavar="UP")
    depend.add_argument("downstream", metavar="DOWN")
    depend.set_defaults(func=_depend)
    dependents = actions.add_parser(
        "dependents", parents=[parent], help="transitive dependents of NAME, in topological order"
    )
    dependents.add_argument("name")
    dependents.set_defaults(func=_dependents)
    deps = actions.add_parser("deps", parents=[parent], help="every dependency edge")
    deps.set_defaults(func=_deps)


def _depend(args: argparse.Namespace) -> int:
    from dspex.cli._vars import open_store

    with open_store(args) as store:
        store.add_dependency(args.session, args.upstream, args.downstream)
    edge = {"upstream": args.upstream, "downstream": args.downstream}
    print(json.dumps(edge) if args.json else f"{args.upstream} -> {args.downstream}")
    return 0


def _dependents(args: argparse.Namespace) -> int:
    from dspex.cli._vars import open_store

    with open_store(args) as store:
        names = store.get_dependents(args.session, args.name)
    if args.json:
        print(json.dumps(names))
    else:
        for name in names:
            print(name)
    return 0


def _deps(args: argparse.Namespace) -> int:
    from dspex.cli._vars import open_store

    with open_store(args) as store:
        edges = store.get_dependencies(args.session)
    if args.json:
        print(json.dumps([{"upstream": up, "downstream": down} for up, down in edges]))
    else:
        for up, down in edges:
            print(f"{up} -> {down}")
    return 0
