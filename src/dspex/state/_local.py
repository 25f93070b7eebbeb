"""Layer 2: LocalProvider, the in-process StateProvider and the one home of store semantics.

Sessions are dicts of immutable records guarded by a per-session lock. Reads take no lock
(a dict lookup of an immutable record is atomic in CPython), so a hot read costs a few hundred
nanoseconds. The gRPC store server wraps this class, so versions, revisions, history and watch
behave identically local and remote.
"""

from __future__ import annotations

import fnmatch
import os
import queue
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

import dspex.errors as errors
from dspex._model import (
    EMPTY,
    SessionInfo,
    VariableRecord,
    VariableSpec,
    VariableUpdate,
    freeze,
    make_spec,
    validate,
)
from dspex.state._provider import UpdateResults
from dspex.state._watch import END, VariableWatch

__all__ = ["LocalProvider", "current_writer"]

_CLOSED_IDS_KEPT = 10_000

_new_tuple: Any = tuple.__new__

current_writer: ContextVar[str] = ContextVar(
    "dspex_writer", default=f"{socket.gethostname()}:{os.getpid()}"
)
"""Who is writing: recorded as ``writer`` on each record. The store server sets it per call."""


class _Watcher:
    __slots__ = ("items", "lagged", "last_put", "max_queue", "names")

    def __init__(self, names: frozenset[str], max_queue: int, after: int) -> None:
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.names = names
        self.max_queue = max_queue
        self.lagged = False
        self.last_put = after

    def offer(self, update: VariableUpdate) -> None:
        if self.lagged or (self.names and update.name not in self.names):
            return
        if self.items.qsize() >= self.max_queue:
            self.lagged = True
            self.items.put(
                errors.WatchLaggedError(
                    f"watcher fell behind (queue of {self.max_queue} full); "
                    f"resume with after_revision={self.last_put}",
                    resume_from=self.last_put,
                )
            )
            return
        self.last_put = update.revision
        self.items.put(update)

    def preload(self, update: VariableUpdate) -> None:
        # The backlog handed over at subscription (initial records, replayed changes) is
        # bounded by the variable count and log_size; it does not count against the queue
        # bound, so a resuming watcher is not told to resume again at once.
        if not self.names or update.name in self.names:
            self.items.put(update)
            self.last_put = max(self.last_put, update.revision)


class _Session:
    __slots__ = (
        "created_at",
        "history",
        "last_heartbeat",
        "lock",
        "log",
        "revision",
        "session_id",
        "ttl",
        "variables",
        "watchers",
    )

    def __init__(self, session_id: str, ttl: float | None, log_size: int) -> None:
        self.session_id = session_id
        self.ttl = ttl
        self.created_at = self.last_heartbeat = time.time()
        self.lock = threading.RLock()
        self.revision = 0
        self.variables: dict[str, VariableRecord] = {}
        self.history: dict[str, deque[VariableRecord]] = {}
        self.log: deque[VariableUpdate] = deque(maxlen=log_size)
        self.watchers: list[_Watcher] = []

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.session_id,
            self.created_at,
            self.revision,
            len(self.variables),
            self.last_heartbeat,
            self.ttl,
        )


class LocalProvider:
    """In-process, thread-safe StateProvider: no server, no serialization.

    Choose it for programs that run in one process; a :class:`dspex.Session` created without a
    ``store`` uses it and promotes to a session store only when an out-of-process component
    needs one.

    Args:
        history_size: versions kept per variable for ``history``/``rollback``.
        log_size: changes kept per session for resuming watches with ``after_revision``.
        watch_queue_size: updates a watcher may have pending before it is ended as lagged.
        max_sessions: open sessions this provider holds at most (None: unbounded).

    Examples:
        >>> from dspex._model import make_spec
        >>> provider = LocalProvider()
        >>> sid = provider.create_session()
        >>> provider.register_variable(sid, "t", make_spec(float, max=2.0), 0.7).version
        1
    """

    def __init__(
        self,
        *,
        history_size: int = 100,
        log_size: int = 10_000,
        watch_queue_size: int = 1024,
        max_sessions: int | None = None,
    ) -> None:
        if history_size < 1 or log_size < 1 or watch_queue_size < 1:
            raise errors.ConstraintError(
                "history_size, log_size and watch_queue_size must each be at least 1"
            )
        self.history_size = history_size
        self.log_size = log_size
        self.watch_queue_size = watch_queue_size
        self.max_sessions = max_sessions
        self._sessions: dict[str, _Session] = {}
        # Ids of closed sessions (an insertion-ordered set, oldest first) so a late call says
        # "closed" rather than "not found"; bounded so a long-lived store does not grow.
        self._closed_ids: dict[str, None] = {}
        self._lock = threading.Lock()

    # -- sessions -------------------------------------------------------------------------

    def create_session(self, session_id: str | None = None, *, ttl: float | None = None) -> str:
        session_id = session_id or uuid.uuid4().hex
        with self._lock:
            if session_id not in self._sessions:
                if self.max_sessions is not None and len(self._sessions) >= self.max_sessions:
                    raise errors.LimitExceededError(
                        f"limit reached: open sessions (limit {self.max_sessions}); "
                        "close sessions you no longer need, or join an existing one by id",
                        limit=self.max_sessions,
                        what="open sessions",
                    )
                self._sessions[session_id] = _Session(session_id, ttl, self.log_size)
            self._closed_ids.pop(session_id, None)
        return session_id

    def get_session(self, session_id: str) -> SessionInfo:
        return self._session(session_id).info()

    def list_sessions(self) -> list[SessionInfo]:
        with self._lock:
            sessions = list(self._sessions.values())
        return sorted((s.info() for s in sessions), key=lambda info: info.created_at)

    def heartbeat(self, session_id: str) -> None:
        self._session(session_id).last_heartbeat = time.time()

    def close_session(self, session_id: str) -> None:
        with self._lock:
            state = self._sessions.pop(session_id, None)
            if state is None:
                raise self._missing_session(session_id)
            self._closed_ids[session_id] = None
            if len(self._closed_ids) > _CLOSED_IDS_KEPT:
                del self._closed_ids[next(iter(self._closed_ids))]
        with state.lock:
            for watcher in state.watchers:
                watcher.items.put(END)
            state.watchers.clear()

    # -- variables ------------------------------------------------------------------------

    def register_variable(
        self,
        session_id: str,
        name: str,
        spec: VariableSpec,
        value: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> VariableRecord:
        _check_name(name)
        state = self._session(session_id)
        # Re-check the spec: it may come from the wire or be built by hand, not by make_spec.
        # The canonical form also makes equal specs compare equal (choices list vs tuple).
        spec = make_spec(spec.type, **spec.constraints)
        with state.lock:
            existing = state.variables.get(name)
            if existing is not None:
                if existing.spec != spec:
                    raise errors.VariableExistsError(
                        f"variable {name!r} is already registered as {existing.spec.to_json()}; "
                        f"cannot re-register it as {spec.to_json()} (delete it first)",
                        name=name,
                        session_id=session_id,
                    )
                return existing
            value = validate(spec, value, name)
            state.revision += 1
            record = VariableRecord(
                name, spec, value, 1, state.revision, time.time(), current_writer.get(),
                freeze(metadata) if metadata else EMPTY,
            )  # fmt: skip
            state.history[name] = deque((record,), maxlen=self.history_size)
            self._publish(state, record, "register")
            return record

    def get_variable(self, session_id: str, name: str) -> VariableRecord:
        try:
            return self._sessions[session_id].variables[name]
        except KeyError:
            raise self._missing(session_id, name) from None

    def get_variables(self, session_id: str, names: Collection[str]) -> dict[str, VariableRecord]:
        state = self._session(session_id)
        if isinstance(names, str):  # one name, not its characters
            names = (names,)
        with state.lock:
            return {name: self._variable(state, name) for name in names}

    def set_variable(
        self, session_id: str, name: str, value: Any, *, expected_version: int | None = None
    ) -> VariableRecord:
        state = self._session(session_id)
        with state.lock:
            old = self._variable(state, name)
            _check_version(old, expected_version, session_id)
            return self._commit(state, old, validate(old.spec, value, name), "set")

    def update_variables(
        self,
        session_id: str,
        values: Mapping[str, Any],
        *,
        atomic: bool = False,
        expected_versions: Mapping[str, int] | None = None,
    ) -> UpdateResults:
        expected = expected_versions or {}
        state = self._session(session_id)
        with state.lock:
            checked: dict[str, Any] = {}
            results: UpdateResults = {}
            for name, value in values.items():
                try:
                    old = self._variable(state, name)
                    _check_version(old, expected.get(name), session_id)
                    checked[name] = (old, validate(old.spec, value, name))
                except errors.DspexError as exc:
                    results[name] = exc
            if atomic and results:
                return _abort_batch(values, results)
            for name, (old, value) in checked.items():
                results[name] = self._commit(state, old, value, "set")
            return {name: results[name] for name in values}

    def list_variables(self, session_id: str, pattern: str = "*") -> list[VariableRecord]:
        state = self._session(session_id)
        with state.lock:  # one consistent revision, and no dict resize mid-iteration
            records = list(state.variables.values())
        return sorted(
            (r for r in records if fnmatch.fnmatchcase(r.name, pattern)), key=lambda r: r.name
        )

    def delete_variable(self, session_id: str, name: str) -> None:
        state = self._session(session_id)
        with state.lock:
            record = self._variable(state, name)
            state.revision += 1
            del state.variables[name]
            del state.history[name]
            update = VariableUpdate(state.revision, "delete", name, record)
            state.log.append(update)
            for watcher in state.watchers:
                watcher.offer(update)

    def get_history(
        self, session_id: str, name: str, limit: int | None = None
    ) -> list[VariableRecord]:
        state = self._session(session_id)
        with state.lock:
            self._variable(state, name)
            kept = list(state.history[name])
        if limit is None:
            return kept
        return kept[-limit:] if limit > 0 else []

    def rollback_variable(self, session_id: str, name: str, version: int) -> VariableRecord:
        state = self._session(session_id)
        with state.lock:
            current = self._variable(state, name)
            for record in state.history[name]:
                if record.version == version:
                    return self._commit(state, current, record.value, "rollback")
            kept = [r.version for r in state.history[name]]
            raise errors.VersionNotFoundError(
                f"variable {name!r} has no version {version} in its history "
                f"(kept versions: {kept[0]}..{kept[-1]})",
                name=name,
                version=version,
                session_id=session_id,
            )

    def watch_variables(
        self,
        session_id: str,
        names: Collection[str] = (),
        *,
        after_revision: int | None = None,
        include_initial: bool = False,
    ) -> VariableWatch:
        state = self._session(session_id)
        if isinstance(names, str):  # one name, not its characters
            names = (names,)
        with state.lock:
            start = state.revision if after_revision is None else after_revision
            watcher = _Watcher(frozenset(names), self.watch_queue_size, start)
            if include_initial:
                for record in sorted(state.variables.values(), key=lambda r: r.revision):
                    watcher.preload(
                        VariableUpdate(record.revision, "initial", record.name, record)
                    )
            if after_revision is not None:
                self._replay(state, watcher, after_revision)
            watcher.max_queue += watcher.items.qsize()  # live updates only count from here
            state.watchers.append(watcher)

        def cancel() -> None:
            with state.lock:
                if watcher in state.watchers:
                    state.watchers.remove(watcher)

        return VariableWatch(watcher.items, cancel, start)

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for state in sessions:
            with state.lock:
                for watcher in state.watchers:
                    watcher.items.put(END)
                state.watchers.clear()

    # -- internals ------------------------------------------------------------------------

    def _commit(
        self, state: _Session, old: VariableRecord, value: Any, kind: str
    ) -> VariableRecord:
        state.revision += 1
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (about 120 ns each); this
        # is the validated-set hot path and every field is given explicitly.
        record: VariableRecord = _new_tuple(VariableRecord, (
            old.name, old.spec, value, old.version + 1, state.revision, time.time(),
            current_writer.get(), old.metadata, False, old.lock,
        ))  # fmt: skip
        state.variables[old.name] = record
        state.history[old.name].append(record)
        update: VariableUpdate = _new_tuple(
            VariableUpdate, (state.revision, kind, old.name, record)
        )
        state.log.append(update)
        for watcher in state.watchers:
            watcher.offer(update)
        return record

    def _publish(self, state: _Session, record: VariableRecord, kind: str) -> None:
        state.variables[record.name] = record
        update = VariableUpdate(record.revision, kind, record.name, record)
        state.log.append(update)
        for watcher in state.watchers:
            watcher.offer(update)

    def _replay(self, state: _Session, watcher: _Watcher, after_revision: int) -> None:
        if after_revision > state.revision:
            # A revision this session never reached: the watcher saw another history (e.g. a
            # store that restarted empty). Resuming would silently mix the two.
            raise errors.WatchLaggedError(
                f"cannot resume session {state.session_id!r} after revision {after_revision}: "
                f"the session is only at revision {state.revision}; "
                "watch again with include_initial=True",
                resume_from=after_revision,
                session_id=state.session_id,
            )
        if after_revision == state.revision:
            return
        oldest = state.log[0].revision if state.log else state.revision + 1
        if after_revision + 1 < oldest:
            raise errors.WatchLaggedError(
                f"cannot resume session {state.session_id!r} after revision {after_revision}: "
                f"changes before revision {oldest} are no longer kept; "
                "watch again with include_initial=True",
                resume_from=after_revision,
                session_id=state.session_id,
            )
        for update in _since(state.log, after_revision):
            watcher.preload(update)

    def _session(self, session_id: str) -> _Session:
        state = self._sessions.get(session_id)
        if state is None:
            raise self._missing_session(session_id)
        return state

    def _variable(self, state: _Session, name: str) -> VariableRecord:
        record = state.variables.get(name)
        if record is None:
            raise _missing_variable(state.session_id, name)
        return record

    def _missing(self, session_id: str, name: str) -> errors.DspexError:
        if session_id not in self._sessions:
            return self._missing_session(session_id)
        return _missing_variable(session_id, name)

    def _missing_session(self, session_id: str) -> errors.DspexError:
        if session_id in self._closed_ids:
            return errors.SessionClosedError(
                f"session {session_id!r} was closed; start a new dspex.Session()",
                session_id=session_id,
            )
        return errors.SessionNotFoundError(
            f"no session {session_id!r} in this store; create it or check the id",
            session_id=session_id,
        )


def _since(log: Iterable[VariableUpdate], after_revision: int) -> list[VariableUpdate]:
    return [update for update in log if update.revision > after_revision]


def _missing_variable(session_id: str, name: str) -> errors.VariableNotFoundError:
    return errors.VariableNotFoundError(
        f"no variable {name!r} in session {session_id!r}; register it first",
        name=name,
        session_id=session_id,
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 256 or not name.isprintable():
        raise errors.VariableValueError(
            f"variable name {name!r} must be a printable string of 1-256 characters",
            name=str(name),
        )


def _check_version(old: VariableRecord, expected: int | None, session_id: str) -> None:
    if expected is not None and old.version != expected:
        raise errors.VersionConflictError(
            f"variable {old.name!r} is at version {old.version}, not the expected "
            f"{expected}; re-read it and retry",
            name=old.name,
            version=old.version,
            expected_version=expected,
            session_id=session_id,
        )


def _abort_batch(values: Mapping[str, Any], failed: UpdateResults) -> UpdateResults:
    reason = ", ".join(sorted(failed))
    return {
        name: failed.get(name)
        or errors.BatchUpdateError(
            f"{name!r} not applied: the atomic batch failed on {reason}", name=name
        )
        for name in values
    }
