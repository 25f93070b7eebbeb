"""Core: the dependency DAG of one session (pure data structure, no locking).

An edge ``upstream -> downstream`` says the downstream value is derived from the upstream one.
Edges that would close a cycle are refused with the cycle spelled out; ``dependents`` returns
the transitive dependents in topological order, the order recompute callbacks run in.
"""

from __future__ import annotations

from collections import deque

import dspex.errors as errors

__all__ = ["DependencyGraph"]


class DependencyGraph:
    """Directed acyclic graph of variable names."""

    def __init__(self) -> None:
        self._down: dict[str, set[str]] = {}
        self._up: dict[str, set[str]] = {}

    @classmethod
    def from_edges(cls, edges: list[tuple[str, str]]) -> DependencyGraph:
        """A graph holding ``edges`` (assumed acyclic, as stored)."""
        graph = cls()
        for upstream, downstream in edges:
            graph._down.setdefault(upstream, set()).add(downstream)
            graph._up.setdefault(downstream, set()).add(upstream)
        return graph

    def add(self, upstream: str, downstream: str) -> None:
        """Add ``upstream -> downstream``; adding an existing edge is a no-op.

        Raises:
            CycleError: the edge would close a cycle (the message names it).
        """
        if upstream == downstream:
            raise errors.CycleError(
                f"dependency {upstream!r} -> {downstream!r} would make {upstream!r} depend on "
                "itself",
                cycle=[upstream, upstream],
            )
        path = self._path(downstream, upstream)
        if path is not None:
            cycle = [upstream, *path]
            raise errors.CycleError(
                "dependency refused: it would close the cycle " + " -> ".join(cycle),
                cycle=cycle,
            )
        self._down.setdefault(upstream, set()).add(downstream)
        self._up.setdefault(downstream, set()).add(upstream)

    def remove(self, name: str) -> None:
        """Drop ``name`` and every edge touching it (used when a variable is deleted)."""
        for down in self._down.pop(name, set()):
            self._up[down].discard(name)
            if not self._up[down]:
                del self._up[down]
        for up in self._up.pop(name, set()):
            self._down[up].discard(name)
            if not self._down[up]:
                del self._down[up]

    def upstreams(self, name: str) -> list[str]:
        """Direct upstreams of ``name``, sorted."""
        return sorted(self._up.get(name, ()))

    def edges(self) -> list[tuple[str, str]]:
        """Every edge, sorted."""
        return sorted((up, down) for up, downs in self._down.items() for down in downs)

    def dependents(self, name: str) -> list[str]:
        """Every transitive dependent of ``name`` in topological order (ties by name)."""
        return self.dependents_of([name])

    def dependents_of(self, names: list[str]) -> list[str]:
        """Every transitive dependent of any of ``names``, in topological order."""
        reachable: set[str] = set()
        for name in names:
            reachable |= self._reachable(name)
        indegree = {n: len(self._up.get(n, set()) & reachable) for n in reachable}
        ready = sorted(n for n, d in indegree.items() if d == 0)
        order: list[str] = []
        while ready:
            current = ready.pop(0)
            order.append(current)
            for down in sorted(self._down.get(current, ())):
                if down in indegree:
                    indegree[down] -= 1
                    if indegree[down] == 0:
                        ready.append(down)
                        ready.sort()
        return order

    def _reachable(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = deque(self._down.get(name, ()))
        while todo:
            current = todo.popleft()
            if current not in seen:
                seen.add(current)
                todo.extend(self._down.get(current, ()))
        return seen

    def _path(self, start: str, goal: str) -> list[str] | None:
        """A path start -> ... -> goal along edges, or None."""
        parents: dict[str, str | None] = {start: None}
        todo = deque([start])
        while todo:
            current = todo.popleft()
            if current == goal:
                path = [current]
                while (parent := parents[path[-1]]) is not None:
                    path.append(parent)
                return path[::-1]
            for down in sorted(self._down.get(current, ())):
                if down not in parents:
                    parents[down] = current
                    todo.append(down)
        return None
