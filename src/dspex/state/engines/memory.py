"""Engines: MemoryEngine, dicts in this process (the default and the embedded store's engine).

Also the in-memory image that :class:`SQLiteEngine` keeps and persists on every commit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from dspex._model import VariableRecord, VariableUpdate
from dspex.state.engines.contract import (
    EngineConflict,
    EngineListener,
    LogCompacted,
    SessionMeta,
    UnknownSession,
    Write,
    mark_batch,
)

__all__ = ["MemoryEngine"]

_new_tuple: Any = tuple.__new__


class _Space:
    """One session's data."""

    __slots__ = (
        "created_at",
        "edges",
        "history",
        "last_heartbeat",
        "lock",
        "log",
        "owner",
        "revision",
        "ttl",
        "variables",
    )

    def __init__(self, ttl: float | None, owner: str, log_size: int) -> None:
        self.created_at = self.last_heartbeat = time.time()
        self.ttl = ttl
        self.owner = owner
        self.revision = 0
        self.lock = threading.Lock()  # never re-entered: listeners do not call back in
        self.variables: dict[str, VariableRecord] = {}
        self.history: dict[str, deque[VariableRecord]] = {}
        self.log: deque[VariableUpdate] = deque(maxlen=log_size)
        self.edges: list[tuple[str, str]] = []


class MemoryEngine:
    """Sessions and records in dicts; commits are atomic under a per-session lock.

    Args:
        history_size: versions kept per variable.
        log_size: updates kept per session for resuming watches.
    """

    def __init__(self, *, history_size: int = 100, log_size: int = 10_000) -> None:
        self.history_size = history_size
        self.log_size = log_size
        self._spaces: dict[str, _Space] = {}
        self._lock = threading.Lock()
        # Only engines that override _persist pay for calling it on the write hot path.
        self._durable = type(self)._persist is not MemoryEngine._persist
        self._listeners: list[EngineListener] = []

    @property
    def spaces(self) -> dict[str, _Space]:
        """The in-memory image, session id -> data with ``.variables`` (name -> record).

        Providers read it directly for lock-free hot reads; treat it as read-only.
        """
        return self._spaces

    # -- sessions -------------------------------------------------------------------------

    def create_session(self, session_id: str, *, ttl: float | None, owner: str) -> bool:
        with self._lock:
            if session_id in self._spaces:
                return False
            space = _Space(ttl, owner, self.log_size)
            self._created(session_id, _meta(session_id, space))  # may raise: nothing added yet
            self._spaces[session_id] = space
        return True

    def session(self, session_id: str) -> SessionMeta | None:
        space = self._spaces.get(session_id)
        return None if space is None else _meta(session_id, space)

    def sessions(self) -> list[SessionMeta]:
        with self._lock:
            items = list(self._spaces.items())
        return [_meta(session_id, space) for session_id, space in items]

    def touch(self, session_id: str, now: float) -> bool:
        space = self._spaces.get(session_id)
        if space is None:
            return False
        self._touched(session_id, now)
        space.last_heartbeat = now
        return True

    def drop_session(self, session_id: str) -> bool:
        space = self._spaces.get(session_id)
        if space is None:
            return False
        with space.lock:  # lock order: session, then engine (commit holds only the session's)
            with self._lock:
                if self._spaces.get(session_id) is not space:
                    return False
                self._dropped(session_id)  # may raise: the session is still there
                del self._spaces[session_id]
            for listener in self._listeners:
                listener(session_id, (), True)
        return True

    # -- records --------------------------------------------------------------------------

    def get(self, session_id: str, name: str) -> VariableRecord | None:
        try:
            return self._spaces[session_id].variables.get(name)
        except KeyError:
            raise UnknownSession(session_id) from None

    def records(self, session_id: str) -> list[VariableRecord]:
        return list(self._space(session_id).variables.values())

    def history(self, session_id: str, name: str) -> list[VariableRecord]:
        space = self._space(session_id)
        with space.lock:
            return list(space.history.get(name, ()))

    def commit(self, session_id: str, writes: Sequence[Write]) -> list[VariableUpdate]:
        space = self._spaces.get(session_id)
        if space is None:
            raise UnknownSession(session_id)
        with space.lock:
            if self._spaces.get(session_id) is not space:
                raise UnknownSession(session_id)
            if len(writes) > 1:
                _check_names(writes)
            variables = space.variables
            for write in writes:
                current = variables.get(write.name)
                if current is None:
                    if write.expect_revision is not None or write.kind == "delete":
                        raise EngineConflict(write.name)
                elif current.revision != write.expect_revision:
                    raise EngineConflict(write.name)
            updates = self._plan(space, writes)
            if self._durable:
                self._persist(session_id, updates)  # may raise: memory untouched until it passes
            for update in updates:
                self._install(space, update)
            for listener in self._listeners:
                listener(session_id, updates, False)
            return updates

    def changes(self, session_id: str, after_revision: int) -> list[VariableUpdate]:
        space = self._space(session_id)
        with space.lock:
            if after_revision >= space.revision:
                return []
            oldest = space.log[0].revision if space.log else space.revision + 1
            if after_revision + 1 < oldest:
                raise LogCompacted(oldest)
            return [update for update in space.log if update.revision > after_revision]

    def edges(self, session_id: str) -> list[tuple[str, str]]:
        # No copy: this is read on every value change, and put_edges replaces the list
        # wholesale instead of mutating it. Callers must not mutate it either.
        return self._space(session_id).edges

    def put_edges(
        self, session_id: str, expect: Sequence[tuple[str, str]], edges: Sequence[tuple[str, str]]
    ) -> None:
        space = self._space(session_id)
        with space.lock:
            if self._spaces.get(session_id) is not space:
                raise UnknownSession(session_id)
            if space.edges != list(expect):
                raise EngineConflict("edges")
            new = list(edges)
            self._edges_changed(session_id, new)  # may raise: the old edges stay
            space.edges = new

    def listen(self, listener: EngineListener) -> None:
        self._listeners.append(listener)

    @property
    def blocks(self) -> bool:
        """Answers from memory: never blocks."""
        return False

    def close(self) -> None:
        self._listeners.clear()

    # -- internals (SQLiteEngine overrides the persistence hooks) --------------------------

    def _space(self, session_id: str) -> _Space:
        space = self._spaces.get(session_id)
        if space is None:
            raise UnknownSession(session_id)
        return space

    def commit_set(
        self, session_id: str, old: VariableRecord, value: Any, writer: str
    ) -> VariableUpdate:
        """Commit ``value`` as the next version of ``old``: the hot path of optimizer loops.

        The same checks and effects as :meth:`commit` of one ``"set"`` write computed from
        ``old`` (compare-and-set, revision, history, log, listeners), inlined; records are
        immutable, so "unchanged since read" is an identity check. Engines that persist go
        through :meth:`commit`. Only memory images offer this method.

        Raises:
            EngineConflict: the variable changed since ``old`` was read.
            UnknownSession: the session does not exist.
        """
        name = old.name
        if self._durable:
            write = Write(
                name, old.revision, "set", old.spec, value, old.version + 1, writer,
                old.metadata, False, old.lock,
            )  # fmt: skip
            return self.commit(session_id, (write,))[0]
        space = self._spaces.get(session_id)
        if space is None:
            raise UnknownSession(session_id)
        with space.lock:
            if space.variables.get(name) is not old:
                raise EngineConflict(name)
            if self._spaces.get(session_id) is not space:
                raise UnknownSession(session_id)
            revision = space.revision + 1
            record = _new_tuple(VariableRecord, (
                name, old.spec, value, old.version + 1, revision, time.time(), writer,
                old.metadata, False, old.lock,
            ))  # fmt: skip
            update: VariableUpdate = _new_tuple(
                VariableUpdate, (revision, "set", name, record, None)
            )
            space.revision = revision
            space.variables[name] = record
            space.history[name].append(record)
            space.log.append(update)
            for listener in self._listeners:
                listener(session_id, (update,), False)
            return update

    def _plan(self, space: _Space, writes: Sequence[Write]) -> list[VariableUpdate]:
        now = time.time()
        updates = []
        revision = space.revision
        for write in writes:
            revision += 1
            # Unpacking beats ten attribute reads: this is the hot path of every write.
            name, _expect, kind, spec, value, version, writer, metadata, stale, lock = write
            if kind == "delete":
                record = space.variables[name]
            else:
                # tuple.__new__ skips the NamedTuples' Python-level __new__ (about 120 ns each).
                record = _new_tuple(VariableRecord, (
                    name, spec, value, version, revision, now, writer, metadata, stale, lock,
                ))  # fmt: skip
            updates.append(_new_tuple(VariableUpdate, (revision, kind, name, record, None)))
        return mark_batch(updates) if len(updates) > 1 else updates

    def _install(self, space: _Space, update: VariableUpdate) -> None:
        space.revision = update.revision
        name, record = update.name, update.record
        if update.kind == "delete":
            del space.variables[name]
            del space.history[name]
        else:
            space.variables[name] = record
            kept = space.history.get(name)
            if kept is None or update.kind == "register":
                space.history[name] = deque((record,), maxlen=self.history_size)
            elif kept[-1].version == record.version:
                kept[-1] = record  # stale/lock changes annotate the version, not add one
            else:
                kept.append(record)
        space.log.append(update)

    def _created(self, session_id: str, meta: SessionMeta) -> None:
        """Persistence hook: a session is being created (may raise: it is not added then)."""

    def _touched(self, session_id: str, now: float) -> None:
        """Persistence hook: a heartbeat is being recorded (may raise)."""

    def _dropped(self, session_id: str) -> None:
        """Persistence hook: a session is being deleted (may raise: it stays then)."""

    def _persist(self, session_id: str, updates: list[VariableUpdate]) -> None:
        """Persistence hook: make ``updates`` durable before they are installed (may raise)."""

    def _edges_changed(self, session_id: str, edges: list[tuple[str, str]]) -> None:
        """Persistence hook: the dependency edges are changing (may raise: they stay)."""


def _check_names(writes: Sequence[Write]) -> None:
    names = {write.name for write in writes}
    if len(names) != len(writes):
        raise ValueError(
            f"a commit names each variable at most once; got {[w.name for w in writes]}"
        )


def _meta(session_id: str, space: _Space) -> SessionMeta:
    return SessionMeta(
        session_id,
        space.created_at,
        space.last_heartbeat,
        space.ttl,
        space.revision,
        space.owner,
        len(space.variables),
    )
