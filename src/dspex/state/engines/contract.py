"""Engines: the storage-engine interface below the store semantics.

An engine stores sessions, variable records, bounded history, the change log and dependency
edges, and applies a batch of writes atomically with compare-and-set on each variable's
revision. It knows nothing of validation, locks, versions policy or access: those live once in
:class:`dspex.state.LocalProvider`, which computes each write and retries on a conflict.

Engines: ``MemoryEngine`` (default), ``SQLiteEngine`` (durable, one server),
``RedisEngine`` (shared by several servers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple, Protocol

import dspex.errors as errors
from dspex._model import BatchMark, VariableRecord, VariableSpec, VariableUpdate

__all__ = [
    "Engine",
    "EngineConflict",
    "EngineListener",
    "LogCompacted",
    "SessionMeta",
    "UnknownSession",
    "Write",
    "check_sizes",
    "mark_batch",
    "write_deadline",
]

write_deadline: ContextVar[float | None] = ContextVar("dspex_write_deadline", default=None)
"""When the caller of the write in progress stops waiting for it (``time.monotonic()``; None:
never). The store server sets it from the call's deadline. An engine whose commit can wait
outside this process (Redis, stalled) refuses to apply a commit that arrives later than this,
so a write its caller gave up on never lands after writes the caller made since."""


def check_sizes(**sizes: int | None) -> None:
    """Refuse a history or log size or a budget below 1 before an engine is built (a size of
    0 would let a commit be written and then fail while trimming, reporting failure for an
    applied write); None is no bound.

    Raises:
        ConstraintError: a size is not a whole number of at least 1.
    """
    for name, value in sizes.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise errors.ConstraintError(
                f"{name} must be a whole number of at least 1, got {value!r}"
            )


class SessionMeta(NamedTuple):
    """What an engine keeps about one session."""

    session_id: str
    created_at: float
    last_heartbeat: float
    ttl: float | None
    revision: int
    owner: str
    variable_count: int


class Write(NamedTuple):
    """One change to apply, computed by the semantics layer from the record it read.

    ``expect_revision`` is the revision of that record (``None``: the name must be absent).
    ``kind`` is the VariableUpdate kind; ``"delete"`` removes the variable and its history
    (a delete of an absent name is a conflict). A commit names each variable at most once.
    The engine assigns the session revision and the time.
    """

    name: str
    expect_revision: int | None
    kind: str
    spec: VariableSpec
    value: Any
    version: int
    writer: str
    metadata: Mapping[str, Any]
    stale: bool = False
    lock: Mapping[str, Any] | None = None


class EngineConflict(Exception):  # noqa: N818 - internal control-flow signal, never escapes
    """A write's ``expect_revision`` no longer matches: re-read and recompute."""


class UnknownSession(Exception):  # noqa: N818 - internal signal translated by the provider
    """The session does not exist in the engine."""


class LogCompacted(Exception):  # noqa: N818 - internal signal translated by the provider
    """Changes after the requested revision are no longer kept; ``args[0]`` = oldest kept."""


def mark_batch(updates: Sequence[VariableUpdate]) -> list[VariableUpdate]:
    """The updates of one multi-write commit (an atomic batch), each marked with the batch's
    first and last revision (watchers set ``end`` on the last one they receive)."""
    mark = BatchMark(updates[0].revision, updates[-1].revision, False)
    return [update._replace(batch=mark) for update in updates]


EngineListener = Callable[[str, Sequence[VariableUpdate], bool], None]
"""Called with (session_id, committed updates in revision order, session_closed)."""


class Engine(Protocol):
    """Storage for sessions and records. All methods are thread-safe."""

    history_size: int

    def now(self) -> float:
        """The store's clock, in seconds since the epoch: every lease, TTL and timestamp is
        decided by it, so all servers sharing the engine agree (Redis: Redis's own ``TIME``;
        one process: its start time plus monotonic time, immune to clock steps)."""
        ...

    @property
    def blocks(self) -> bool:
        """True when a call may wait on a disk or the network (a server then runs calls in
        worker threads); False when every call answers from memory."""

    def create_session(self, session_id: str, *, ttl: float | None, owner: str) -> bool:
        """Create the session; False if it already existed (left unchanged)."""
        ...

    def session(self, session_id: str) -> SessionMeta | None:
        """The session's metadata, or None."""
        ...

    def sessions(self) -> list[SessionMeta]:
        """Every session's metadata."""
        ...

    def touch(self, session_id: str, now: float) -> bool:
        """Record a heartbeat; False if the session does not exist."""
        ...

    def drop_session(self, session_id: str) -> bool:
        """Delete the session and everything in it; False if it did not exist."""
        ...

    def get(self, session_id: str, name: str) -> VariableRecord | None:
        """The current record of ``name``, or None (raises UnknownSession)."""
        ...

    def records(self, session_id: str) -> list[VariableRecord]:
        """Every current record of the session (raises UnknownSession)."""
        ...

    def history(self, session_id: str, name: str) -> list[VariableRecord]:
        """Kept versions of ``name``, oldest first (raises UnknownSession)."""
        ...

    def commit(self, session_id: str, writes: Sequence[Write]) -> list[VariableUpdate]:
        """Apply every write or none; returns the updates in revision order.

        Raises:
            EngineConflict: some ``expect_revision`` did not match.
            UnknownSession: the session does not exist.
        """
        ...

    def changes(self, session_id: str, after_revision: int) -> list[VariableUpdate]:
        """Kept updates after ``after_revision`` (raises LogCompacted, UnknownSession)."""
        ...

    def edges(self, session_id: str) -> list[tuple[str, str]]:
        """The session's dependency edges (raises UnknownSession)."""
        ...

    def put_edges(
        self, session_id: str, expect: Sequence[tuple[str, str]], edges: Sequence[tuple[str, str]]
    ) -> None:
        """Replace the edges if they still equal ``expect`` (raises EngineConflict)."""
        ...

    def listen(self, listener: EngineListener) -> None:
        """Deliver every committed update (from any server sharing the engine) to ``listener``.

        Each session's updates arrive in revision order, never twice; a dropped session ends
        with one ``closed=True`` call. A listener of a shared engine that fell further behind
        than the change log keeps sees a jump in revisions (and can tell from them).
        """
        ...

    def close(self) -> None:
        """Release connections, files and threads. Idempotent."""
        ...
