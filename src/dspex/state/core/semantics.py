"""EngineProvider, the StateProvider over an engine: the one home of store semantics.

It is the in-process backend of a local session (public name ``LocalProvider``) and what a
store server serves (over memory, SQLite or Redis).

Validation, versions, optimistic concurrency, history, rollback, watch, dependencies,
optimization locks, session expiry and limits are written here once. Storage is an
:class:`~dspex.state.engines.Engine` (memory by default; SQLite or Redis under a store
server), which applies each computed write with compare-and-set, so several servers sharing one
engine stay consistent: a write that lost a race is recomputed from the fresh record.

Reads take no lock (a dict lookup of an immutable record on the memory engine), so a hot read
costs about a hundred nanoseconds.
"""

from __future__ import annotations

import fnmatch
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
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
    plain_metadata,
)
from dspex._model import validate as _validate
from dspex.state.core import locks as _locks
from dspex.state.core.contract import UpdateResults
from dspex.state.core.dependencies import DependencyGraph
from dspex.state.core.expiry import Sweeper
from dspex.state.core.fanout import Watcher, WatchHub
from dspex.state.core.identity import current_lock_owner, current_principal, current_writer
from dspex.state.core.limits import LimitChecker, uncounted_watch
from dspex.state.core.watch import VariableWatch
from dspex.state.core.writes import (
    END,
    VALUE_KINDS,
    abort_batch,
    annotated,
    cannot_resume,
    check_name,
    check_session_id,
    conflict,
    contention,
    info,
    initial_updates,
    mark_stale,
    missing_variable,
    new_value,
    remember,
    same_spec,
)
from dspex.state.engines import (
    Engine,
    EngineConflict,
    LogCompacted,
    MemoryEngine,
    SessionMeta,
    UnknownSession,
    Write,
    open_engine,
)

__all__ = ["EngineProvider", "LocalProvider", "current_writer"]

_CAS_ATTEMPTS = 64
_CLOSED_IDS_KEPT = 10_000
_LOCK_POLL = 0.02

_new_tuple: Any = tuple.__new__


class EngineProvider:
    """Thread-safe StateProvider running the store semantics over an engine, in this process.

    With the default memory engine it is the in-process backend: no server, no serialization.
    A :class:`dspex.Session` without a ``store`` uses it, and ``dspex serve`` wraps it with a
    durable or shared engine.

    Args:
        engine: an Engine, an engine spec for ``open_engine`` (``"memory"``,
            ``"sqlite:///DIR"``, ``"redis://HOST:PORT/N"``), or None for memory.
        history_size: versions kept per variable (for engines this provider opens).
        log_size: changes kept per session for resuming watches (engines it opens).
        watch_queue_size: updates a watcher may have pending before it is ended as lagged.
        max_sessions, max_variables, max_value_bytes, max_watchers: limits (None: unbounded).
        sweep_interval: seconds between checks for expired sessions and lock leases.

    Examples:
        >>> from dspex._model import make_spec
        >>> provider = EngineProvider()
        >>> sid = provider.create_session()
        >>> provider.register_variable(sid, "t", make_spec(float, max=2.0), 0.7).version
        1
    """

    def __init__(
        self,
        engine: Engine | str | None = None,
        *,
        history_size: int = 100,
        log_size: int = 10_000,
        watch_queue_size: int = 1024,
        max_sessions: int | None = None,
        max_variables: int | None = None,
        max_value_bytes: int | None = None,
        max_watchers: int | None = None,
        sweep_interval: float = 0.5,
    ) -> None:
        if history_size < 1 or log_size < 1 or watch_queue_size < 1:
            raise errors.ConstraintError(
                "history_size, log_size and watch_queue_size must each be at least 1"
            )
        self._owns_engine = engine is None or isinstance(engine, str)
        if engine is None:
            engine = MemoryEngine(history_size=history_size, log_size=log_size)
        elif isinstance(engine, str):
            engine = open_engine(engine, history_size=history_size, log_size=log_size)
        self.engine: Engine = engine
        self.history_size = engine.history_size
        self.watch_queue_size = watch_queue_size
        self.limits = LimitChecker(max_sessions, max_variables, max_value_bytes, max_watchers)
        self._hub = WatchHub()
        self.engine.listen(self._hub.publish)
        self._sweeper = Sweeper(self, sweep_interval)
        # Ids of closed/expired sessions (insertion-ordered sets, oldest first) so a late call
        # says "closed"/"expired" rather than "not found"; bounded for long-lived stores.
        self._closed_ids: dict[str, None] = {}
        self._expired_ids: dict[str, None] = {}
        self._get = engine.get
        self._commit = engine.commit
        # Optional single-set fast path of memory images; the generic commit otherwise.
        self._commit_set = getattr(engine, "commit_set", None) or (
            lambda session_id, old, value, writer: engine.commit(
                session_id, (new_value(old, "set", value),)
            )[0]
        )
        # Optional commit off the event loop (SQLite with fsync): see set_variable_later.
        self._commit_later = getattr(engine, "commit_later", None)
        self._max_value_bytes = self.limits.max_value_bytes
        # Engines with an in-memory image (memory, SQLite) are read directly: no call, no lock.
        self._spaces: Mapping[str, Any] = getattr(engine, "spaces", {})

    # -- sessions -------------------------------------------------------------------------

    def create_session(self, session_id: str | None = None, *, ttl: float | None = None) -> str:
        if session_id:  # "" means no id, as on the wire
            check_session_id(session_id)
        session_id = session_id or uuid.uuid4().hex
        if ttl is not None and not ttl > 0:
            raise errors.ConstraintError(f"session ttl must be positive seconds, got {ttl!r}")
        if self.engine.session(session_id) is None:
            self.limits.check_sessions(len(self.engine.sessions()))
            self.engine.create_session(session_id, ttl=ttl, owner=current_principal.get())
        self._closed_ids.pop(session_id, None)
        self._expired_ids.pop(session_id, None)
        if ttl is not None:
            self._sweeper.ensure_running()
        return session_id

    def get_session(self, session_id: str) -> SessionInfo:
        return info(self._meta(session_id))

    def list_sessions(self) -> list[SessionInfo]:
        return sorted((info(m) for m in self.engine.sessions()), key=lambda i: i.created_at)

    def heartbeat(self, session_id: str) -> None:
        if not self.engine.touch(session_id, self.engine.now()):
            raise self._missing_session(session_id)

    def close_session(self, session_id: str) -> None:
        if not self.engine.drop_session(session_id):
            raise self._missing_session(session_id)
        remember(self._closed_ids, session_id)
        self._hub.end_session(session_id, END)

    def expire_session(self, session_id: str) -> bool:
        """Remove a session whose TTL ran out; its watchers end with SessionExpiredError."""
        reason = errors.SessionExpiredError(
            f"session {session_id!r} expired: no heartbeat within its TTL; start a new session",
            session_id=session_id,
        )
        self._hub.end_session(session_id, reason)
        remember(self._expired_ids, session_id)
        return self.engine.drop_session(session_id)

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
        # Metadata first, as a session-store client must (it cannot send metadata that is not
        # JSON), so every provider refuses such a call alike, whatever else is wrong with it.
        meta = freeze(plain_metadata(metadata)) if metadata is not None else EMPTY
        check_name(name)
        # Re-check the spec: it may come from the wire or be built by hand, not by make_spec.
        # The canonical form also makes equal specs compare equal (choices list vs tuple).
        spec = make_spec(spec.type, **spec.constraints)
        for _ in range(_CAS_ATTEMPTS):
            existing = self._lookup(session_id, name)
            if existing is not None:
                existing = same_spec(existing, spec, session_id)
            # The initial value is checked even when the record exists (and is returned): a
            # bad value is refused wherever the session lives (a client cannot send some).
            checked = self.limits.check_value(spec, _validate(spec, value, name), name)
            if existing is not None:
                return existing
            self.limits.check_variables(self._meta(session_id).variable_count)
            write = Write(name, None, "register", spec, checked, 1, current_writer.get(), meta)
            try:
                return self._apply(session_id, write)
            except EngineConflict:
                continue  # registered concurrently: the next round compares specs
        raise contention(name)

    def get_variable(self, session_id: str, name: str) -> VariableRecord:
        try:
            return self._spaces[session_id].variables[name]  # type: ignore[no-any-return]
        except KeyError:
            pass
        try:
            record = self._get(session_id, name)
        except UnknownSession:
            raise self._missing_session(session_id) from None
        if record is None:
            raise missing_variable(session_id, name, (r.name for r in self._records(session_id)))
        return record  # type: ignore[no-any-return]

    def get_variables(self, session_id: str, names: Collection[str]) -> dict[str, VariableRecord]:
        if isinstance(names, str):  # one name, not its characters
            names = (names,)
        space = self._spaces.get(session_id)
        if space is not None:  # the engine's memory image: only the names asked for
            with space.lock:  # one revision, as the engine's records() reads it
                variables = space.variables
                found = {name: variables[name] for name in names if name in variables}
            if len(found) == len(names):
                return found
        records = {r.name: r for r in self._records(session_id)}
        missing = [name for name in names if name not in records]
        if missing:
            raise missing_variable(session_id, missing[0], records)
        return {name: records[name] for name in names}

    def set_variable(
        self, session_id: str, name: str, value: Any, *, expected_version: int | None = None
    ) -> VariableRecord:
        # The validated-set hot path: the steps of _change/_apply, inlined.
        for _ in range(_CAS_ATTEMPTS):
            old, checked = self._checked_set(session_id, name, value, expected_version)
            try:
                update = self._commit_set(session_id, old, checked, current_writer.get())
            except EngineConflict:
                continue
            except UnknownSession:
                raise self._missing_session(session_id) from None
            space = self._spaces.get(session_id)
            if space.edges if space is not None else self.engine.edges(session_id):
                self._after(session_id, (update,))
            return update.record  # type: ignore[no-any-return]
        raise contention(name)

    @property
    def commits_later(self) -> bool:
        """True if the engine commits off the event loop (``commit_later``: SQLite with
        ``fsync``), so :meth:`set_variable_later` may answer a set without a worker thread."""
        return self._commit_later is not None

    def set_variable_later(
        self, session_id: str, name: str, value: Any, *, expected_version: int | None = None
    ) -> Awaitable[VariableRecord] | None:
        """:meth:`set_variable` without blocking the calling event loop, on an engine that
        commits off it (``commit_later``: SQLite with ``fsync``): checked and planned now, the
        awaitable gives the record once the change is durable and installed.

        Returns None when this set must take :meth:`set_variable` in a worker thread: the
        engine cannot commit later, or says so (the session has dependents to recompute, or
        another write holds it).
        """
        commit_later = self._commit_later
        if commit_later is None:
            return None
        import asyncio  # only servers call this, on their loop: `import dspex` stays light

        loop = asyncio.get_running_loop()
        for _ in range(_CAS_ATTEMPTS):
            old, checked = self._checked_set(session_id, name, value, expected_version)
            try:
                future = commit_later(session_id, (new_value(old, "set", checked),), loop)
            except EngineConflict:
                continue
            except UnknownSession:
                raise self._missing_session(session_id) from None
            return None if future is None else _first_record(future)
        raise contention(name)

    def _checked_set(
        self, session_id: str, name: str, value: Any, expected_version: int | None
    ) -> tuple[VariableRecord, Any]:
        """The current record of ``name`` and ``value`` validated as its next value.

        Raises:
            DspexError: the session or variable is missing, the version is not
                ``expected_version``, another holder has the variable's lock, or the value is
                invalid or too large.
        """
        try:  # get_variable's hot path, inlined
            old = self._spaces[session_id].variables[name]
        except KeyError:
            old = self.get_variable(session_id, name)
        if expected_version is not None and old.version != expected_version:
            raise conflict(old, expected_version, session_id)
        owner = current_lock_owner.get()
        if old.lock is not None or owner:  # a holder's grant is checked even once gone
            _locks.check_write(old.lock, name, owner, self.engine.now())
        checked = _validate(old.spec, value, name)
        if self._max_value_bytes is not None:
            self.limits.check_value(old.spec, checked, name)
        return old, checked

    def update_variables(
        self,
        session_id: str,
        values: Mapping[str, Any],
        *,
        atomic: bool = False,
        expected_versions: Mapping[str, int] | None = None,
    ) -> UpdateResults:
        expected = expected_versions or {}
        if not atomic:
            return {
                name: self._try_set(session_id, name, v, expected) for name, v in values.items()
            }
        for _ in range(_CAS_ATTEMPTS):
            writes, failed = self._plan_batch(session_id, values, expected)
            if failed:
                return abort_batch(values, failed)
            try:
                updates = self._commit(session_id, writes)
            except EngineConflict:
                continue
            except UnknownSession:
                raise self._missing_session(session_id) from None
            self._after(session_id, updates)
            return {u.name: u.record for u in updates}
        raise contention(", ".join(values))

    def list_variables(self, session_id: str, pattern: str = "*") -> list[VariableRecord]:
        return sorted(
            (r for r in self._records(session_id) if fnmatch.fnmatchcase(r.name, pattern)),
            key=lambda r: r.name,
        )

    def delete_variable(self, session_id: str, name: str) -> None:
        self._change(session_id, name, lambda old: annotated(old, "delete", old.lock))
        self._edit_edges(session_id, lambda graph: graph.remove(name))

    def get_history(
        self, session_id: str, name: str, limit: int | None = None
    ) -> list[VariableRecord]:
        self.get_variable(session_id, name)
        kept = self._history(session_id, name)
        if limit is None:
            return kept
        return kept[-limit:] if limit > 0 else []

    def rollback_variable(self, session_id: str, name: str, version: int) -> VariableRecord:
        def rollback(old: VariableRecord) -> Write:
            kept = self._history(session_id, name)
            for record in kept:
                if record.version == version:
                    return new_value(old, "rollback", record.value)
            raise errors.VersionNotFoundError(
                f"variable {name!r} has no version {version} in its history "
                f"(kept versions: {kept[0].version}..{kept[-1].version})",
                name=name,
                version=version,
                session_id=session_id,
            )

        return self._change(session_id, name, rollback, check_lock=True)

    def watch_variables(
        self,
        session_id: str,
        names: Collection[str] = (),
        *,
        after_revision: int | None = None,
        include_initial: bool = False,
    ) -> VariableWatch:
        if isinstance(names, str):  # one name, not its characters
            names = (names,)
        counted = not uncounted_watch.get()
        if counted:
            self.limits.check_watchers(self._hub.count(session_id))
        watcher = Watcher(frozenset(names), self.watch_queue_size, counted)
        self._hub.add(session_id, watcher)  # subscribe first: nothing committed from now is lost
        try:
            start = self._load_backlog(session_id, watcher, after_revision, include_initial)
        except BaseException:
            self._hub.remove(session_id, watcher)
            raise
        watcher.go_live()
        return VariableWatch(watcher.items, lambda: self._hub.remove(session_id, watcher), start)

    def changes(self, session_id: str, after_revision: int) -> list[VariableUpdate]:
        """The committed updates after ``after_revision``, in revision order: what a watch
        resuming there replays.

        A ``dspex.Remote`` sends them with its calls so that its workers need not wait for
        their watch streams to deliver a change made just before the call.

        Raises:
            WatchLaggedError: the change log no longer reaches back to ``after_revision`` (its
                ``resume_from`` is the oldest revision it does).
            SessionError: the session does not exist.
        """
        try:
            return self.engine.changes(session_id, after_revision)
        except LogCompacted as exc:
            why = (
                exc.args[1]
                if len(exc.args) > 1
                else f"changes before revision {exc.args[0]} are no longer kept"
            )
            raise cannot_resume(session_id, after_revision, why, exc.args[0] - 1) from None
        except UnknownSession:
            raise self._missing_session(session_id) from None

    # -- dependencies ---------------------------------------------------------------------

    def add_dependency(self, session_id: str, upstream: str, downstream: str) -> None:
        """Add the edge ``upstream -> downstream`` (both must exist; cycles are refused)."""
        self.get_variable(session_id, upstream)
        self.get_variable(session_id, downstream)
        self._edit_edges(session_id, lambda graph: graph.add(upstream, downstream))

    def get_dependents(self, session_id: str, name: str) -> list[str]:
        """Transitive dependents of ``name`` in topological order."""
        self.get_variable(session_id, name)
        return self._graph(session_id).dependents(name)

    def get_dependencies(self, session_id: str) -> list[tuple[str, str]]:
        """Every (upstream, downstream) edge of the session."""
        return self._graph(session_id).edges()

    # -- optimization locks ---------------------------------------------------------------

    def acquire_lock(
        self,
        session_id: str,
        name: str,
        *,
        owner: str,
        optimizer_id: str,
        lease: float = 30.0,
        policy: str = "fail",
        timeout: float | None = None,
    ) -> VariableRecord:
        """Take the optimization lock on ``name`` for ``owner`` (a secret token).

        ``policy``: ``"fail"`` raises LockedError if held; ``"wait"`` polls until free (or
        ``timeout``); ``"preempt"`` takes it over.
        """
        if policy not in _locks.POLICIES:
            raise errors.VariableValueError(
                f"lock policy {policy!r} unknown; use one of {', '.join(_locks.POLICIES)}"
            )
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout

        def take(old: VariableRecord) -> Write:
            lock = _locks.acquire(
                old.lock, name, owner=owner, optimizer_id=optimizer_id, lease=lease,
                now=self.engine.now(), epoch=old.revision, preempt=policy == "preempt",
            )  # fmt: skip
            return annotated(old, "lock", lock)

        while True:
            try:
                record = self._change(session_id, name, take)
            except errors.LockedError as refused:
                if policy != "wait":
                    raise
                if deadline is not None and time.monotonic() > deadline:
                    raise _locks.still_locked(refused, time.monotonic() - started) from None
                time.sleep(_LOCK_POLL)
                continue
            self._sweeper.watch_lock(session_id, name)
            return record

    def release_lock(self, session_id: str, name: str, *, owner: str) -> VariableRecord:
        """Release ``owner``'s lock on ``name`` (a lock already gone is a no-op)."""

        def drop(old: VariableRecord) -> Write | None:
            _locks.release(old.lock, name, owner, self.engine.now())
            return None if old.lock is None else annotated(old, "lock", None)

        return self._change(session_id, name, drop)

    def renew_lock(
        self,
        session_id: str,
        name: str,
        *,
        owner: str,
        progress: Mapping[str, Any] | None = None,
    ) -> VariableRecord:
        """Extend ``owner``'s lease on ``name`` and publish optimizer ``progress`` with it."""
        checked = freeze(dict(progress or {}))

        def extend(old: VariableRecord) -> Write:
            lock = _locks.renew(old.lock, name, owner, self.engine.now(), checked)
            return annotated(old, "lock", lock)

        return self._change(session_id, name, extend)

    def expire_lock(self, session_id: str, name: str) -> bool:
        """Clear ``name``'s lock if its lease ran out (publishing a "lock" update)."""
        try:
            old = self.get_variable(session_id, name)
        except errors.DspexError:
            return False
        if old.lock is None or _locks.holder(old.lock, self.engine.now()) is not None:
            return False
        try:
            self._apply(session_id, annotated(old, "lock", None))
        except (EngineConflict, errors.DspexError):
            return False
        return True

    @property
    def blocks(self) -> bool:
        """True when a call may wait on a disk or the network (the engine's answer); a store
        server then runs this provider's calls in worker threads."""
        return self.engine.blocks

    def close(self) -> None:
        self._sweeper.stop()
        self._hub.end_all()
        if self._owns_engine:
            self.engine.close()

    # -- internals ------------------------------------------------------------------------

    def _apply(self, session_id: str, write: Write) -> VariableRecord:
        try:
            updates = self._commit(session_id, (write,))
        except UnknownSession:
            raise self._missing_session(session_id) from None
        if write.kind in VALUE_KINDS:
            self._after(session_id, updates)
        return updates[0].record  # type: ignore[no-any-return]

    def _change(
        self,
        session_id: str,
        name: str,
        make: Callable[[VariableRecord], Write | None],
        *,
        check_lock: bool = False,
    ) -> VariableRecord:
        """Read-compute-commit with retry; ``make`` returns None for "nothing to write"."""
        for _ in range(_CAS_ATTEMPTS):
            old = self.get_variable(session_id, name)
            owner = current_lock_owner.get()
            if check_lock and (old.lock is not None or owner):
                _locks.check_write(old.lock, name, owner, self.engine.now())
            write = make(old)
            if write is None:
                return old
            try:
                return self._apply(session_id, write)
            except EngineConflict:
                continue
        raise contention(name)

    def _try_set(
        self, session_id: str, name: str, value: Any, expected: Mapping[str, int]
    ) -> VariableRecord | errors.DspexError:
        try:
            return self.set_variable(session_id, name, value, expected_version=expected.get(name))
        except (errors.VariableError, errors.AccessError, errors.LimitExceededError) as exc:
            return exc

    def _plan_batch(
        self, session_id: str, values: Mapping[str, Any], expected: Mapping[str, int]
    ) -> tuple[list[Write], UpdateResults]:
        writes: list[Write] = []
        failed: UpdateResults = {}
        now, owner = self.engine.now(), current_lock_owner.get()
        for name, value in values.items():
            try:
                old = self.get_variable(session_id, name)
                if name in expected and old.version != expected[name]:
                    raise conflict(old, expected[name], session_id)
                _locks.check_write(old.lock, name, owner, now)
                checked = self.limits.check_value(old.spec, _validate(old.spec, value, name), name)
                writes.append(new_value(old, "set", checked))
            except (errors.VariableError, errors.LimitExceededError) as exc:
                failed[name] = exc
        return writes, failed

    def _after(self, session_id: str, updates: Any) -> None:
        """Mark the dependents of changed variables stale, in topological order."""
        edges = self.engine.edges(session_id)
        if not edges:
            return
        graph = DependencyGraph.from_edges(edges)
        changed = [u.name for u in updates]
        for name in graph.dependents_of(changed):
            if name not in changed:  # a batch that also wrote a dependent left it fresh
                self._change(session_id, name, mark_stale)

    def _edit_edges(self, session_id: str, edit: Callable[[DependencyGraph], None]) -> None:
        for _ in range(_CAS_ATTEMPTS):
            edges = self._edges(session_id)
            graph = DependencyGraph.from_edges(edges)
            edit(graph)
            try:
                self.engine.put_edges(session_id, edges, graph.edges())
                return
            except EngineConflict:
                continue
        raise contention("dependencies")

    def _graph(self, session_id: str) -> DependencyGraph:
        return DependencyGraph.from_edges(self._edges(session_id))

    def _load_backlog(
        self, session_id: str, watcher: Watcher, after: int | None, initial: bool
    ) -> int:
        revision = self._meta(session_id).revision
        if after is not None and after > revision:
            # A revision this session never reached: the watcher saw another history (e.g. a
            # store that restarted empty). Resuming would silently mix the two.
            why = f"the session is only at revision {revision}"
            raise cannot_resume(session_id, after, why, self._earliest_resumable(session_id))
        start = revision if after is None else after
        watcher.last_put = start
        if initial:
            records = sorted(self._records(session_id), key=lambda r: r.revision)
            watcher.preload(initial_updates(records))
        if after is not None:
            watcher.preload(self.changes(session_id, after))
        return start

    def _earliest_resumable(self, session_id: str) -> int:
        """The oldest ``after_revision`` a watch of the session can resume from."""
        try:
            self.engine.changes(session_id, 0)
        except LogCompacted as exc:
            return int(exc.args[0]) - 1
        return 0

    def _lookup(self, session_id: str, name: str) -> VariableRecord | None:
        try:
            return self._get(session_id, name)  # type: ignore[no-any-return]
        except UnknownSession:
            raise self._missing_session(session_id) from None

    def _records(self, session_id: str) -> list[VariableRecord]:
        try:
            return self.engine.records(session_id)
        except UnknownSession:
            raise self._missing_session(session_id) from None

    def _history(self, session_id: str, name: str) -> list[VariableRecord]:
        try:
            return self.engine.history(session_id, name)
        except UnknownSession:
            raise self._missing_session(session_id) from None

    def _edges(self, session_id: str) -> list[tuple[str, str]]:
        try:
            return self.engine.edges(session_id)
        except UnknownSession:
            raise self._missing_session(session_id) from None

    def _meta(self, session_id: str) -> SessionMeta:
        meta = self.engine.session(session_id)
        if meta is None:
            raise self._missing_session(session_id)
        return meta

    def _missing_session(self, session_id: str) -> errors.DspexError:
        if session_id in self._expired_ids:
            return errors.SessionExpiredError(
                f"session {session_id!r} expired: no heartbeat within its TTL; start a new one",
                session_id=session_id,
            )
        if session_id in self._closed_ids:
            return errors.SessionClosedError(
                f"session {session_id!r} was closed; create a new session",
                session_id=session_id,
            )
        return errors.SessionNotFoundError(
            f"no session {session_id!r} in this store; create it or check the id",
            session_id=session_id,
        )


LocalProvider = EngineProvider
"""The public name of :class:`EngineProvider` (``dspex.LocalProvider``): in a local session it is
the in-process backend."""


async def _first_record(future: Awaitable[list[VariableUpdate]]) -> VariableRecord:
    """The record of the one update ``future`` gives (see ``set_variable_later``)."""
    return (await future)[0].record
