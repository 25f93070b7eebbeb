"""Engines: MemoryEngine, dicts in this process (the default and the embedded store's engine).

Also the in-memory image that :class:`SQLiteEngine` keeps and persists on every commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from dspex._model import VariableRecord, VariableUpdate
from dspex.state.engines.contract import (
    EngineConflict,
    EngineListener,
    LogCompacted,
    SessionMeta,
    UnknownSession,
    Write,
    check_sizes,
    mark_batch,
)
from dspex.state.engines.sizes import (
    HISTORY_BYTES,
    LOG_BYTES,
    SIZED_TYPES,
    budget_exceeded,
    record_bytes,
    value_size,
)

__all__ = ["HISTORY_BYTES", "LOG_BYTES", "MemoryEngine", "record_bytes"]

_new_tuple: Any = tuple.__new__
_monotonic = time.monotonic


_log = logging.getLogger("dspex.state")


class _Space:
    """One session's data."""

    __slots__ = (
        "created_at",
        "edges",
        "history",
        "history_bytes",
        "history_sizes",
        "kept_bytes",
        "last_heartbeat",
        "lock",
        "log",
        "log_bytes",
        "log_sizes",
        "lost",
        "owner",
        "revision",
        "ttl",
        "variables",
    )

    def __init__(self, ttl: float | None, owner: str, log_size: int, now: float = 0.0) -> None:
        self.created_at = self.last_heartbeat = now
        self.ttl = ttl
        self.owner = owner
        self.revision = 0
        self.lock = threading.Lock()  # never re-entered: listeners do not call back in
        self.variables: dict[str, VariableRecord] = {}
        self.history: dict[str, deque[VariableRecord]] = {}
        self.log: deque[VariableUpdate] = deque(maxlen=log_size)
        # Bytes of sized values (strings, JSON, arrays) kept in each history and in the log.
        self.history_bytes: dict[str, int] = {}
        self.log_bytes = 0
        # The size of each kept version and logged update, beside (aligned with) the history
        # and log entries, so trimming never sizes a value twice. Kept only while the history
        # or log holds bytes: numbers and booleans (size 0) cost nothing.
        self.history_sizes: dict[str, deque[int]] = {}
        self.log_sizes: deque[int] | None = None
        self.kept_bytes = 0  # the sum of history_bytes: what the session's budget counts
        self.edges: list[tuple[str, str]] = []
        # (first, last, generation) of revisions a durable engine lost and will never reissue.
        self.lost: tuple[int, int, int] | None = None


class MemoryEngine:
    """Sessions and records in dicts; commits are atomic under a per-session lock.

    Args:
        history_size: versions kept per variable.
        log_size: updates kept per session for resuming watches.
        history_bytes: bytes of values kept per variable's history (the current version is
            always kept): history is bounded in bytes as well as versions.
        log_bytes: bytes of values kept in a session's change log (the last update is always
            kept); a watch resuming from before what is kept gets ``watch_lagged``.
        max_session_bytes, max_store_bytes: budgets on the bytes of values kept (every kept
            version) in one session and in the whole store; a write that would pass one is
            refused with ``LimitExceededError`` (RESOURCE_EXHAUSTED) naming it (None: none).
    """

    def __init__(
        self,
        *,
        history_size: int = 100,
        log_size: int = 10_000,
        history_bytes: int = HISTORY_BYTES,
        log_bytes: int = LOG_BYTES,
        max_session_bytes: int | None = None,
        max_store_bytes: int | None = None,
    ) -> None:
        check_sizes(
            history_size=history_size,
            log_size=log_size,
            history_bytes=history_bytes,
            log_bytes=log_bytes,
            max_session_bytes=max_session_bytes,
            max_store_bytes=max_store_bytes,
        )
        self.max_session_bytes = max_session_bytes
        self.max_store_bytes = max_store_bytes
        self._budgeted = max_session_bytes is not None or max_store_bytes is not None
        self.store_bytes = 0  # bytes of values kept in every session (see kept_bytes)
        self._bytes_lock = threading.Lock()
        self.history_size = history_size
        self.log_size = log_size
        self.history_bytes = history_bytes
        self.log_bytes = log_bytes
        self._spaces: dict[str, _Space] = {}
        self._lock = threading.Lock()
        # Only engines that override _persist pay for calling it on the write hot path.
        self._durable = type(self)._persist is not MemoryEngine._persist
        self._listeners: list[EngineListener] = []
        # Wall-clock time at start plus monotonic time since: leases and TTLs measure real
        # durations even if the system clock is stepped while the server runs.
        self._epoch = time.time() - time.monotonic()

    def now(self) -> float:
        """The store's clock (seconds since the epoch) for timestamps, leases and TTLs
        (:meth:`commit_set` inlines it)."""
        return self._epoch + _monotonic()

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
            space = _Space(ttl, owner, self.log_size, self.now())
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
                self._count_bytes(space, -space.kept_bytes)
            self._notify(session_id, (), True)
        return True

    # -- records --------------------------------------------------------------------------

    def get(self, session_id: str, name: str) -> VariableRecord | None:
        try:
            return self._spaces[session_id].variables.get(name)
        except KeyError:
            raise UnknownSession(session_id) from None

    def records(self, session_id: str) -> list[VariableRecord]:
        space = self._space(session_id)
        with space.lock:  # one revision: a commit installs its writes one by one under it
            return list(space.variables.values())

    def history(self, session_id: str, name: str) -> list[VariableRecord]:
        space = self._space(session_id)
        with space.lock:
            return list(space.history.get(name, ()))

    def commit(self, session_id: str, writes: Sequence[Write]) -> list[VariableUpdate]:
        space = self._spaces.get(session_id)
        if space is None:
            raise UnknownSession(session_id)
        with space.lock:
            updates, sizes = self._checked_plan(session_id, space, writes)
            if self._durable:
                self._persist(session_id, updates)  # may raise: memory untouched until it passes
            self._apply(session_id, space, updates, sizes)
            return updates

    def _checked_plan(
        self, session_id: str, space: _Space, writes: Sequence[Write]
    ) -> tuple[list[VariableUpdate], list[int]]:
        """The updates ``writes`` make and their sizes, once every check passed (the caller
        holds ``space.lock``; nothing changes).

        Raises:
            UnknownSession: the session was dropped.
            EngineConflict: a write's expected revision is not the current one.
            LimitExceededError: a byte budget would be passed.
        """
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
        sizes = [record_bytes(update.record) for update in updates]
        if self._budgeted:
            self._check_budgets(session_id, space, updates, sizes)  # raises: none applied
        return updates, sizes

    def _apply(
        self,
        session_id: str,
        space: _Space,
        updates: Sequence[VariableUpdate],
        sizes: Sequence[int],
    ) -> None:
        """Install checked (and persisted) updates in memory and tell the listeners."""
        for update, size in zip(updates, sizes, strict=True):
            self._install(space, update, size)
        self._notify(session_id, updates, False)

    def changes(self, session_id: str, after_revision: int) -> list[VariableUpdate]:
        space = self._space(session_id)
        with space.lock:
            if space.lost is not None and space.lost[0] <= after_revision <= space.lost[1]:
                first, last, generation = space.lost
                raise LogCompacted(
                    last + 1,
                    f"revisions {first}..{last} were lost when the store's data was damaged or "
                    f"rolled back (store generation {generation} began after them); read the "
                    "session again",
                )
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
        name, spec = old.name, old.spec
        if self._durable:
            write = Write(
                name, old.revision, "set", spec, value, old.version + 1, writer,
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
                name, spec, value, old.version + 1, revision, self._epoch + _monotonic(), writer,
                old.metadata, False, old.lock,
            ))  # fmt: skip
            update: VariableUpdate = _new_tuple(
                VariableUpdate, (revision, "set", name, record, None)
            )
            # Sized once, here; numbers and booleans count 0 bytes and skip the byte work.
            size = value_size(spec, value) if spec.type in SIZED_TYPES else 0
            if self._budgeted:
                self._check_budgets(session_id, space, (update,), (size,))  # raises: none applied
            space.revision = revision
            space.variables[name] = record
            if size or space.history_bytes[name]:
                self._keep_version(space, name, record, size)
            else:
                space.history[name].append(record)  # no bytes held or added: nothing to count
            if size or space.log_bytes:
                self._keep_change(space, update, size)
            else:
                space.log.append(update)
            self._notify(session_id, (update,), False)
            return update

    def _notify(self, session_id: str, updates: Sequence[VariableUpdate], closed: bool) -> None:
        """Tell the listeners; one that fails is logged, never turned into a failure of the
        change, which is applied by now (a write that reports failure was never applied)."""
        for listener in self._listeners:
            try:
                listener(session_id, updates, closed)
            except Exception:
                _log.exception("engine listener failed on session %s", session_id)

    def _plan(self, space: _Space, writes: Sequence[Write]) -> list[VariableUpdate]:
        now = self.now()
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

    def _install(self, space: _Space, update: VariableUpdate, size: int) -> None:
        """Apply one planned update to memory; ``size`` = :func:`record_bytes` of its record."""
        space.revision = update.revision
        name, record = update.name, update.record
        if update.kind == "delete":
            del space.variables[name]
            del space.history[name]
            self._history_total(space, name, 0)
            del space.history_bytes[name]
        else:
            space.variables[name] = record
            kept = space.history.get(name)
            if kept is None or update.kind == "register":
                space.history[name] = deque((record,), maxlen=self.history_size)
                space.history_sizes.pop(name, None)
                if size:
                    space.history_sizes[name] = deque((size,), maxlen=self.history_size)
                self._history_total(space, name, size)
            elif kept[-1].version == record.version:
                kept[-1] = record  # stale/lock changes annotate the version, not add one
                if size or space.history_bytes[name]:
                    sizes = self._history_sizes(space, name)
                    total = space.history_bytes[name] + size - sizes[-1]
                    sizes[-1] = size
                    self._history_total(space, name, total)
            else:
                self._keep_version(space, name, record, size)
        self._keep_change(space, update, size)

    # -- byte bounds ------------------------------------------------------------------------
    # Each kept version's and logged update's size sits beside it (history_sizes, log_sizes),
    # computed once when the record was built; a history or log that holds no bytes keeps no
    # sizes (all would be 0), so numbers and booleans skip this work.

    def _keep_version(
        self, space: _Space, name: str, record: VariableRecord, size: int | None = None
    ) -> None:
        """Append ``record`` (``size`` bytes; None: size it now) to ``name``'s history,
        dropping the oldest versions beyond ``history_size`` or ``history_bytes`` (the newest
        is always kept)."""
        if size is None:
            size = record_bytes(record)
        kept = space.history[name]
        total = space.history_bytes.get(name, 0)
        if not (size or total):
            kept.append(record)
            return
        sizes = self._history_sizes(space, name)
        if len(kept) == kept.maxlen:
            total -= sizes[0]  # both deques drop their oldest on append
        kept.append(record)
        sizes.append(size)
        total += size
        while total > self.history_bytes and len(kept) > 1:
            kept.popleft()
            total -= sizes.popleft()
        self._history_total(space, name, total)

    def _history_sizes(self, space: _Space, name: str) -> deque[int]:
        """The sizes beside ``name``'s kept versions, made when first needed: all 0 while the
        history held no bytes; sized from the records if it was loaded without them."""
        sizes = space.history_sizes.get(name)
        if sizes is None:
            kept = space.history[name]
            held = space.history_bytes.get(name, 0)
            values = map(record_bytes, kept) if held else repeat(0, len(kept))
            sizes = space.history_sizes[name] = deque(values, maxlen=kept.maxlen)
        return sizes

    def _history_total(self, space: _Space, name: str, total: int) -> None:
        """Set the bytes kept in ``name``'s history, keeping session and store totals."""
        delta = total - space.history_bytes.get(name, 0)
        space.history_bytes[name] = total
        if not total:
            space.history_sizes.pop(name, None)  # every kept version is 0 bytes now
        if delta:
            self._count_bytes(space, delta)

    def _count_bytes(self, space: _Space, delta: int) -> None:
        space.kept_bytes += delta
        with self._bytes_lock:
            self.store_bytes += delta

    def _check_budgets(
        self,
        session_id: str,
        space: _Space,
        updates: Sequence[VariableUpdate],
        sizes: Sequence[int],
    ) -> None:
        """Refuse ``updates`` (of ``sizes`` bytes) if the bytes they keep would pass a budget.

        Raises:
            LimitExceededError: naming the budget (RESOURCE_EXHAUSTED on the wire).
        """
        growth = sum(map(self._growth, repeat(space), updates, sizes))
        if growth <= 0:
            return
        limit = self.max_session_bytes
        if limit is not None and space.kept_bytes + growth > limit:
            raise budget_exceeded(session_id, limit)
        limit = self.max_store_bytes
        if limit is not None and self.store_bytes + growth > limit:
            raise budget_exceeded(None, limit)

    def _growth(self, space: _Space, update: VariableUpdate, size: int) -> int:
        """How many bytes ``update`` (``size`` bytes) adds to the session's kept values
        (negative: frees)."""
        name, record = update.name, update.record
        held = space.history_bytes.get(name, 0)
        if update.kind == "delete":
            return -held
        kept = space.history.get(name)
        if kept is None or update.kind == "register":
            return size - held
        if kept[-1].version == record.version:
            return size - (self._history_sizes(space, name)[-1] if held else 0)
        return self._history_after(space, name, record, size)[1] - held

    def _keep_change(self, space: _Space, update: VariableUpdate, size: int | None = None) -> None:
        """Append ``update`` (``size`` bytes; None: size it now) to the change log, bounded by
        ``log_size`` and ``log_bytes`` (the newest is always kept)."""
        if size is None:
            size = record_bytes(update.record)
        log, total = space.log, space.log_bytes
        if not (size or total):
            log.append(update)
            return
        sizes = self._log_sizes(space)
        if len(log) == log.maxlen:
            total -= sizes[0]
        log.append(update)
        sizes.append(size)
        total += size
        while total > self.log_bytes and len(log) > 1:
            log.popleft()
            total -= sizes.popleft()
        space.log_bytes = total
        if not total:
            space.log_sizes = None  # every logged update is 0 bytes now

    @staticmethod
    def _log_sizes(space: _Space) -> deque[int]:
        """The sizes beside the logged updates, made when first needed (all 0 until then)."""
        if space.log_sizes is None:
            log = space.log
            space.log_sizes = deque(repeat(0, len(log)), maxlen=log.maxlen)
        return space.log_sizes

    def _versions_kept(
        self, space: _Space, name: str, record: VariableRecord, size: int | None = None
    ) -> int:
        """How many versions ``name`` keeps once ``record`` is appended (nothing changes)."""
        return self._history_after(space, name, record, size)[0]

    def _history_after(
        self, space: _Space, name: str, record: VariableRecord, size: int | None = None
    ) -> tuple[int, int]:
        """(versions, bytes) ``name`` keeps once ``record`` (``size`` bytes; None: size it
        now) is appended (nothing changes)."""
        if size is None:
            size = record_bytes(record)
        kept = space.history.get(name)
        if not kept:
            return 1, size
        total = space.history_bytes.get(name, 0)
        # No sizes while the history holds no bytes (all 0): planning must not add them.
        sizes = self._history_sizes(space, name) if total else None
        first = 0
        if len(kept) == self.history_size:
            total, first = total - (sizes[0] if sizes is not None else 0), 1
        count, total = len(kept) - first + 1, total + size
        while total > self.history_bytes and count > 1:
            total -= sizes[first] if sizes is not None else 0
            first, count = first + 1, count - 1
        return count, total

    def _oldest_logged(
        self,
        space: _Space,
        updates: Sequence[VariableUpdate],
        sizes: Sequence[int] | None = None,
    ) -> int | None:
        """The oldest revision the log keeps once ``updates`` (of ``sizes`` bytes; None: size
        them now) are appended, or None when nothing already logged is dropped (nothing
        changes)."""
        if sizes is None:
            sizes = [record_bytes(update.record) for update in updates]
        log, total, first, new = space.log, space.log_bytes, 0, 0
        count = len(log) + len(updates)
        total += sum(sizes)
        logged = space.log_sizes  # None: every logged update is 0 bytes
        while count > 1 and (count > self.log_size or total > self.log_bytes):
            if first < len(log):
                total -= logged[first] if logged is not None else 0
                first += 1
            else:
                total, new = total - sizes[new], new + 1
            count -= 1
        if first == 0:
            return None
        return log[first].revision if first < len(log) else updates[new].revision

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
