"""Client side: CachedProvider, a read cache over any StateProvider kept coherent by watching.

Workers read far more than they write, and a read over gRPC costs a round trip. This wrapper
serves ``get_variable`` and ``get_variables`` from a per-session dict that one watch stream per
session keeps up to date, so a hot read costs about what a local read costs:

* reads see your own writes: a write through this wrapper updates the cache before returning;
* others' writes are seen once the stream delivers them (the watch delivery time);
* ``get_variables`` answers from the cache only when it can give every name as of the one
  revision the stream has applied; otherwise (a name not held, an own write not yet confirmed
  by the stream) it asks the store, which reads them all at one revision;
* the cache is only used while its stream is live: when the stream drops (store restart,
  network), reads go to the store until the stream has resumed from the last revision it saw
  and replayed what it missed, so no update is missed, applied twice, or served stale;
* if the store cannot resume (its change log moved on, or it restarted empty), the cache is
  rebuilt from the current records;
* if the stream breaks in this process (an update it cannot decode or apply: a bug), the
  failure is logged and the cache stops serving the session; the next read goes to the store
  and follows the session anew.

Every other verb passes straight to the wrapped provider.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from dspex._model import SessionInfo, VariableRecord, VariableSpec, VariableUpdate
from dspex.errors import (
    ConstraintError,
    DspexError,
    LimitExceededError,
    SessionError,
    StoreUnavailableError,
    WatchError,
    WatchLaggedError,
)
from dspex.state.client.client import SessionStoreProvider
from dspex.state.core.contract import StateProvider, UpdateResults
from dspex.state.core.watch import VariableWatch

__all__ = ["CachedProvider"]

_log = logging.getLogger("dspex.cache")

_DELETED: Final = float("inf")
"""``seen`` marker for a name this process deleted: ignore it until the stream confirms."""

_RETRY_FOLLOW: Final = 1.0
"""Seconds before reads try again to follow a session whose stream could not be opened."""
_YIELD_PAUSE: Final = 5.0
"""Seconds the cache stays off a session after yielding its stream to an explicit watch."""
_YIELD_WAIT: Final = 2.0
"""Seconds an explicit watch retries while the store frees the yielded stream's slot."""


class _SessionView:
    """The cached records of one session and the thread that follows its watch stream."""

    def __init__(self, owner: CachedProvider, session_id: str) -> None:
        self.owner = owner
        self.session_id = session_id
        self.records: dict[str, VariableRecord] = {}
        self.seen: dict[str, float] = {}  # name -> revision of the last change applied
        self.live = False
        self.revision = 0  # last session revision applied from the stream
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # notified as ``revision`` advances
        self.waiting = 0  # threads blocked in wait_revision (guarded by the lock)
        self.closed = False
        self._closing = threading.Event()  # set by close(): a backoff pause ends at once
        self.watch: VariableWatch | None = None
        self._target = 0  # revision to reach before the cache is live again

    # -- applying changes -----------------------------------------------------------------

    def offer(self, record: VariableRecord) -> None:
        """Keep ``record`` if it is newer than what the cache holds (own writes, reads)."""
        with self.lock:
            if record.revision > self.seen.get(record.name, 0):
                self.seen[record.name] = record.revision
                self.records[record.name] = record

    def forget(self, name: str) -> None:
        """This process deleted ``name``: stop serving it until the stream confirms."""
        with self.lock:
            self.seen[name] = _DELETED
            self.records.pop(name, None)

    def apply(self, update: VariableUpdate) -> None:
        """Apply one change from the stream (in revision order)."""
        with self.lock:
            self._keep_change(update)
            if update.kind != "initial" and update.revision > self.revision:
                self.revision = update.revision
            if not self.live and self.revision >= self._target:
                self.live = True
            if self.waiting:
                self.changed.notify_all()

    def catch_up(self, after: int, updates: Sequence[VariableUpdate], revision: int) -> bool:
        """Apply changes handed over by another way than the stream (a caller carrying them).

        ``updates`` must be every change after revision ``after`` up to ``revision``. They
        complete the cache only when the stream has applied ``after`` already (False
        otherwise, and nothing is applied); the stream's later copies of them are then
        skipped, as replays are. Only while live: a cache that is down stays down.
        """
        with self.lock:
            if not self.live or self.revision < after:
                return False
            for update in updates:
                self._keep_change(update)
            if revision > self.revision:
                self.revision = revision
                if self.waiting:
                    self.changed.notify_all()
            return True

    def _keep_change(self, update: VariableUpdate) -> None:
        """Hold ``update``'s record (or drop a deleted name) unless the cache has a newer one;
        the caller holds the lock."""
        name = update.name
        seen = self.seen.get(name, 0)
        if seen == _DELETED and update.kind == "delete":
            seen = 0  # our own delete arrived: from here on the stream rules again
        if update.revision > seen:
            self.seen[name] = update.revision
            if update.kind == "delete":
                self.records.pop(name, None)
            else:
                self.records[name] = update.record

    def wait_revision(self, revision: int, timeout: float) -> bool:
        """Block until the stream has applied ``revision`` (True), the cache stops being
        live, or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            self.waiting += 1
            try:
                while self.revision < revision:
                    remaining = deadline - time.monotonic()
                    if not self.live or remaining <= 0:
                        return False
                    self.changed.wait(remaining)
            finally:
                self.waiting -= 1
        return True

    def go_down(self) -> None:
        """Stop serving from the cache (the stream dropped or the view closed); waiters
        return at once and read through to the store."""
        with self.lock:
            self.live = False
            self.changed.notify_all()

    def snapshot(self, names: Collection[str]) -> dict[str, VariableRecord] | None:
        """The records of ``names`` as of the stream's revision, or None to ask the store.

        Only while live, and only when every name is held at or below the applied revision:
        then each record is its variable's state at ``self.revision`` (the stream applied every
        change up to there), so together they are one consistent read. An own write the stream
        has not delivered yet is newer than that revision, so such reads go to the store.
        """
        with self.lock:
            if not self.live:
                return None
            records = self.records
            revision = self.revision
            snapshot: dict[str, VariableRecord] = {}
            for name in names:
                record = records.get(name)
                if record is None or record.revision > revision:
                    return None
                snapshot[name] = record
            return snapshot

    # -- following the stream -------------------------------------------------------------

    def start(self) -> None:
        """Open the first stream (raises if the session cannot be watched) and follow it."""
        self._open(resume=False)
        threading.Thread(
            target=self._follow, name=f"dspex-cache-{self.session_id[:12]}", daemon=True
        ).start()

    def _open(self, *, resume: bool) -> None:
        inner = self.owner.inner
        if resume:
            try:
                watch = self._watch(after_revision=self.revision)
            except WatchLaggedError:  # the store cannot replay from there: rebuild
                resume = False
            else:
                try:  # every revision up to the head is replayed or live on this stream
                    self._target = inner.get_session(self.session_id).revision
                except BaseException:
                    watch.cancel()
                    raise
        if not resume:
            watch = self._watch(include_initial=True)
            with self.lock:
                self.records.clear()
                self.seen.clear()
                self.revision = self._target = watch.last_revision
        if self.closed:
            watch.cancel()
            return
        self.watch = watch
        with self.lock:
            self.live = self.revision >= self._target

    def _watch(self, **options: Any) -> VariableWatch:
        """Open the cache's stream (lingering as the owner says)."""
        inner, linger = self.owner.inner, self.owner.linger
        if linger:
            assert isinstance(inner, SessionStoreProvider)
            return inner.watch_variables(self.session_id, linger=linger, **options)
        return inner.watch_variables(self.session_id, **options)

    def _follow(self) -> None:
        """Follow the stream until the session or the view ends; then stop serving it.

        Whatever ends the following (the session closed, the stream broken in this process,
        a bug), the view is dropped: reads go to the store, and the next one follows anew.
        The cache never keeps serving a session it no longer follows.
        """
        try:
            self._keep_following()
        except Exception:
            _log.exception(
                "read cache of session %s failed: reads go to the store", self.session_id
            )
        finally:
            self.owner._drop(self)

    def _keep_following(self) -> None:
        while not self.closed:
            try:
                self._drain()
                return  # the stream ended normally: the session was closed
            except WatchLaggedError:
                resumed = self._reopen()  # fell behind: resume at once from the last revision
            except StoreUnavailableError:
                resumed = False
            except WatchError as exc:  # the stream broke in this process: rebuild on next read
                _log.warning("read cache of session %s: %s", self.session_id, exc)
                return
            except DspexError:
                return
            if not resumed:
                self._reconnect()

    def _reconnect(self) -> None:
        """Retry with exponential backoff until the stream resumes or the view is closed.

        A view closed meanwhile does not try again: that would reconnect the closed client
        (it connects lazily), leaving it a channel nobody closes.
        """
        delay = self.owner.min_backoff
        self.go_down()
        while not self.closed:
            if self._closing.wait(delay) or self._reopen():
                return
            delay = min(delay * 2, self.owner.max_backoff)

    def _drain(self) -> None:
        watch = self.watch
        if watch is None:
            raise StoreUnavailableError("no watch stream yet")
        # Applied on the store client's stream thread when it can (no hand-off per update);
        # the loop below then only waits for how the stream ends.
        watch.deliver_to(self.apply)
        for update in watch:
            self.apply(update)

    def _reopen(self) -> bool:
        """Resume the stream; True on success. Session errors end the view."""
        self.go_down()
        try:
            self._open(resume=True)
        except StoreUnavailableError:
            return False
        except SessionError:
            self.closed = True
            return False
        return True

    def close(self) -> None:
        """Stop following and serving the session."""
        self.closed = True
        self._closing.set()
        self.go_down()
        if self.watch is not None:
            self.watch.cancel()


class CachedProvider:
    """A StateProvider that serves reads from a watch-coherent cache of another provider.

    Args:
        inner: the provider holding the sessions (usually a ``SessionStoreProvider``).
        min_backoff, max_backoff: seconds between attempts to resume a dropped stream.
        linger: seconds the store may hold news for the cache's streams (a session-store
            client only; see ``SessionStoreProvider.watch_variables``). For a cache that also
            gets changes another way first (:meth:`catch_up`): others' changes then reach it
            up to ``linger`` later.

    Examples:
        >>> store = SessionStoreProvider("grpc://127.0.0.1:50051")  # doctest: +SKIP
        >>> cached = CachedProvider(store)  # doctest: +SKIP
        >>> cached.get_variable(session_id, "temperature").value  # doctest: +SKIP
        0.7
    """

    def __init__(
        self,
        inner: StateProvider,
        *,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
        linger: float = 0.0,
    ) -> None:
        if linger and not isinstance(inner, SessionStoreProvider):
            raise ConstraintError("linger applies to a cache over a session-store client")
        self.inner = inner
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.linger = linger
        self._views: dict[str, _SessionView] = {}
        self._paused: dict[str, float] = {}  # session -> monotonic time to follow again
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "inner": self.inner,
            "min": self.min_backoff,
            "max": self.max_backoff,
            "linger": self.linger,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["inner"],
            min_backoff=state["min"],
            max_backoff=state["max"],
            linger=state.get("linger", 0.0),
        )

    def follow(self, session_id: str) -> None:
        """Start caching ``session_id`` now rather than on its first read.

        Raises:
            DspexError: the session cannot be watched (unknown, closed, store unreachable).
        """
        self._view(session_id, strict=True)

    def is_live(self, session_id: str) -> bool:
        """True while reads of ``session_id`` are served from the cache."""
        view = self._views.get(session_id)
        return view is not None and view.live

    def resync(self, session_id: str) -> None:
        """Stop serving ``session_id`` from a view that fell behind: the next read asks the
        store and follows the session again (a fresh stream, from the store's current state).

        For a reader that must see a revision the cache's stream has not delivered in time
        (a ``dspex.Remote`` worker catching up to its caller's revision).
        """
        view = self._views.get(session_id)
        if view is not None:
            self._drop(view)

    def revision(self, session_id: str) -> int | None:
        """The session revision the cache has caught up to (None when not following it)."""
        view = self._views.get(session_id)
        return None if view is None else view.revision

    def wait_revision(self, session_id: str, revision: int, timeout: float) -> bool:
        """Block until reads of ``session_id`` from the cache see ``revision`` or later.

        True once the watch stream has applied ``revision``. False when the cache does not
        serve the session live (reads then go to the store) or ``timeout`` seconds passed.
        Woken by the stream itself, so a waiter costs no polling.
        """
        view = self._views.get(session_id)
        return view is not None and view.wait_revision(revision, timeout)

    def catch_up(
        self,
        session_id: str,
        after_revision: int,
        updates: Sequence[VariableUpdate],
        revision: int,
    ) -> bool:
        """Apply ``updates``, every change of ``session_id`` after ``after_revision`` up to
        ``revision``, without waiting for the watch stream to deliver them.

        A ``dspex.Remote`` worker applies those its caller sent with the call. True when
        reads from the cache now see ``revision``; False (nothing applied) when the cache does
        not serve the session live or its stream has not yet applied ``after_revision``.
        """
        view = self._views.get(session_id)
        return view is not None and view.catch_up(after_revision, updates, revision)

    def _view(self, session_id: str, *, strict: bool = False) -> _SessionView | None:
        view = self._views.get(session_id)
        if view is not None:
            return view
        if not strict and self._paused.get(session_id, 0.0) > time.monotonic():
            return None  # recently refused or yielded: read from the store for now
        with self._lock:
            view = self._views.get(session_id)
            if view is None:
                view = _SessionView(self, session_id)
                try:
                    view.start()
                except DspexError:
                    if strict:
                        raise
                    self._paused[session_id] = time.monotonic() + _RETRY_FOLLOW
                    return None  # the read itself reports what is wrong
                self._paused.pop(session_id, None)
                self._views[session_id] = view
        return view

    def _drop(self, view: _SessionView) -> None:
        view.close()
        with self._lock:
            if self._views.get(view.session_id) is view:
                del self._views[view.session_id]

    def _keep(self, session_id: str, record: VariableRecord) -> VariableRecord:
        view = self._views.get(session_id)
        if view is not None:
            view.offer(record)
        return record

    # -- reads ----------------------------------------------------------------------------

    def get_variable(self, session_id: str, name: str) -> VariableRecord:
        view = self._views.get(session_id)
        if view is not None and view.live:
            record = view.records.get(name)
            if record is not None:
                return record
        view = self._view(session_id)
        record = self.inner.get_variable(session_id, name)
        if view is not None:
            view.offer(record)
        return record

    def get_variables(self, session_id: str, names: Collection[str]) -> dict[str, VariableRecord]:
        view = self._views.get(session_id)
        if view is not None:
            records = view.snapshot(names)
            if records is not None:
                return records
        view = self._view(session_id)
        records = self.inner.get_variables(session_id, names)  # one revision: ask the store
        if view is not None:
            for record in records.values():
                view.offer(record)
        return records

    # -- writes (the cache sees them before they return) ----------------------------------

    def register_variable(
        self,
        session_id: str,
        name: str,
        spec: VariableSpec,
        value: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> VariableRecord:
        record = self.inner.register_variable(session_id, name, spec, value, metadata=metadata)
        return self._keep(session_id, record)

    def set_variable(
        self, session_id: str, name: str, value: Any, *, expected_version: int | None = None
    ) -> VariableRecord:
        record = self.inner.set_variable(
            session_id, name, value, expected_version=expected_version
        )
        return self._keep(session_id, record)

    def update_variables(
        self,
        session_id: str,
        values: Mapping[str, Any],
        *,
        atomic: bool = False,
        expected_versions: Mapping[str, int] | None = None,
    ) -> UpdateResults:
        results = self.inner.update_variables(
            session_id, values, atomic=atomic, expected_versions=expected_versions
        )
        for result in results.values():
            if isinstance(result, VariableRecord):
                self._keep(session_id, result)
        return results

    def delete_variable(self, session_id: str, name: str) -> None:
        view = self._views.get(session_id)
        if view is not None:
            view.forget(name)
        self.inner.delete_variable(session_id, name)

    def rollback_variable(self, session_id: str, name: str, version: int) -> VariableRecord:
        return self._keep(session_id, self.inner.rollback_variable(session_id, name, version))

    # -- everything else passes through ---------------------------------------------------

    def create_session(self, session_id: str | None = None, *, ttl: float | None = None) -> str:
        return self.inner.create_session(session_id, ttl=ttl)

    def get_session(self, session_id: str) -> SessionInfo:
        return self.inner.get_session(session_id)

    def list_sessions(self) -> list[SessionInfo]:
        return self.inner.list_sessions()

    def heartbeat(self, session_id: str) -> None:
        self.inner.heartbeat(session_id)

    def close_session(self, session_id: str) -> None:
        view = self._views.get(session_id)
        if view is not None:
            self._drop(view)
        self.inner.close_session(session_id)

    def list_variables(self, session_id: str, pattern: str = "*") -> list[VariableRecord]:
        return self.inner.list_variables(session_id, pattern)

    def get_history(
        self, session_id: str, name: str, limit: int | None = None
    ) -> list[VariableRecord]:
        return self.inner.get_history(session_id, name, limit)

    def watch_variables(
        self,
        session_id: str,
        names: Collection[str] = (),
        *,
        after_revision: int | None = None,
        include_initial: bool = False,
    ) -> VariableWatch:
        """Watch through the wrapped provider. At the store's watcher limit, the cache gives
        its own stream of the session up to the explicit watch (reads then go to the store)."""

        def watch() -> VariableWatch:
            return self.inner.watch_variables(
                session_id, names, after_revision=after_revision, include_initial=include_initial
            )

        try:
            return watch()
        except LimitExceededError:
            view = self._views.get(session_id)
            if view is None:
                raise
            self._paused[session_id] = time.monotonic() + _YIELD_PAUSE
            self._drop(view)
        deadline = time.monotonic() + _YIELD_WAIT
        while True:  # the store frees the yielded stream's slot shortly after it is cancelled
            try:
                return watch()
            except LimitExceededError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def add_dependency(self, session_id: str, upstream: str, downstream: str) -> None:
        self.inner.add_dependency(session_id, upstream, downstream)

    def get_dependents(self, session_id: str, name: str) -> list[str]:
        return self.inner.get_dependents(session_id, name)

    def get_dependencies(self, session_id: str) -> list[tuple[str, str]]:
        return self.inner.get_dependencies(session_id)

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
        record = self.inner.acquire_lock(
            session_id, name, owner=owner, optimizer_id=optimizer_id, lease=lease,
            policy=policy, timeout=timeout,
        )  # fmt: skip
        return self._keep(session_id, record)

    def release_lock(self, session_id: str, name: str, *, owner: str) -> VariableRecord:
        return self._keep(session_id, self.inner.release_lock(session_id, name, owner=owner))

    def renew_lock(
        self,
        session_id: str,
        name: str,
        *,
        owner: str,
        progress: Mapping[str, Any] | None = None,
    ) -> VariableRecord:
        record = self.inner.renew_lock(session_id, name, owner=owner, progress=progress)
        return self._keep(session_id, record)

    def close(self) -> None:
        """Stop following every session, then close the wrapped provider: every watch opened
        through this cache ends normally, and no follower thread is left behind."""
        with self._lock:
            views, self._views = list(self._views.values()), {}
        for view in views:
            view.close()
        self.inner.close()
