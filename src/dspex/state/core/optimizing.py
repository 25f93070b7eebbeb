"""Core: the helpers behind ``optimizing`` (lock handle) and ``depend(recompute=...)``.

Both work over any provider through the session verbs, so they behave the same for local and
store-backed sessions, in the main process and in workers.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from dspex._model import VariableRecord
from dspex.errors import (
    DspexError,
    LockedError,
    SessionClosedError,
    SessionNotFoundError,
    StoreUnavailableError,
    WatchError,
    WatchLaggedError,
)
from dspex.state.core.contract import StateProvider
from dspex.state.core.identity import current_lock_owner
from dspex.state.core.locks import fenced_owner, owner_digest
from dspex.state.core.watch import VariableWatch

__all__ = ["OptimizationLock", "Recomputer"]

_log = logging.getLogger("dspex.session")

_RETRY_FIRST: Final = 0.1
_RETRY_MAX: Final = 5.0
"""Seconds between attempts to follow a session again after its watch broke (doubling)."""


class _View(Protocol):
    provider: StateProvider
    session_id: str

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: Any, *, expected_version: int | None = None) -> Any: ...

    def watch(
        self, *names: str, after_revision: int | None = None, initial: bool = False
    ) -> VariableWatch: ...


class OptimizationLock:
    """Exclusive write access to some variables for one optimizer (a context manager).

    Entering takes every lock (in name order, releasing those taken if one fails), marks
    this context as the holder, and renews the leases every ``lease / 3`` seconds in a
    background thread. Leaving releases them.

    Writes in the block carry each grant's fencing epoch: once a lock is lost (its lease ran
    out while this process was paused, or another optimizer preempted it) the next write to
    that variable is refused with ``LockedError`` saying the lock was lost, and :attr:`lost`
    names the locks the renewals found lost.
    """

    def __init__(
        self,
        view: _View,
        names: Sequence[str],
        *,
        optimizer_id: str,
        lease: float,
        policy: str,
        timeout: float | None,
    ) -> None:
        self._view = view
        self.names = sorted(set(names))
        self.optimizer_id = optimizer_id
        self.lease = lease
        self.policy = policy
        self.timeout = timeout
        self._owner = secrets.token_hex(16)
        self._held: list[str] = []
        self._fences: dict[str, int] = {}
        self.lost: dict[str, str] = {}
        """Locks found lost (name -> why) by the renewals or :meth:`check`."""
        self._token: contextvars.Token[str | None] | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> OptimizationLock:
        for name in self.names:
            try:
                self._call("acquire_lock", name)
            except BaseException:
                self._release_all()
                raise
            self._held.append(name)
        self._token = current_lock_owner.set(fenced_owner(self._owner, self._fences))
        self._renewer = threading.Thread(target=self._renew, name="dspex-lock-renew", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self._token is not None:
            current_lock_owner.reset(self._token)
        self._release_all()

    def report(self, **progress: Any) -> None:
        """Publish optimizer progress (e.g. iteration, best_score, best_value) on the locks.

        Watchers see it as a ``"lock"`` update; the record's ``lock["progress"]`` holds it.
        """
        for name in self._held:
            self._view.provider.renew_lock(
                self._view.session_id, name, owner=self._owner, progress=progress
            )

    def check(self) -> None:
        """Ask the store whether every lock is still this block's grant.

        Raises:
            LockedError: a lock was lost (it is also recorded in :attr:`lost`).
        """
        for record in self.records():
            lock, fence = record.lock, self._fences.get(record.name)
            if lock is None or lock.get("epoch") != fence or not self._mine(lock):
                why = (
                    "its lease expired or it was released"
                    if lock is None
                    else (f"optimizer {lock['optimizer_id']!r} holds it now")
                )
                self.lost[record.name] = why
        if self.lost:
            lost = ", ".join(f"{name!r} ({why})" for name, why in sorted(self.lost.items()))
            raise LockedError(
                f"optimization locks lost: {lost}", lost=True, names=sorted(self.lost)
            )

    def _mine(self, lock: Mapping[str, Any]) -> bool:
        return bool(lock.get("owner") == owner_digest(self._owner))

    def records(self) -> list[VariableRecord]:
        """The current records of the locked variables."""
        return [self._view.provider.get_variable(self._view.session_id, n) for n in self._held]

    def _call(self, verb: str, name: str) -> None:
        provider, session_id = self._view.provider, self._view.session_id
        if verb == "acquire_lock":
            record = provider.acquire_lock(
                session_id, name, owner=self._owner, optimizer_id=self.optimizer_id,
                lease=self.lease, policy=self.policy, timeout=self.timeout,
            )  # fmt: skip
            if record.lock is not None and "epoch" in record.lock:  # older stores: no fence
                self._fences[name] = int(record.lock["epoch"])
        elif verb == "release_lock":
            provider.release_lock(session_id, name, owner=self._owner)
        else:
            provider.renew_lock(session_id, name, owner=self._owner)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            for name in list(self._held):
                try:
                    self._call("renew_lock", name)
                except LockedError as exc:  # lost (expired or preempted): writes are refused
                    self.lost.setdefault(name, str(exc))
                except DspexError:
                    continue  # the store is unreachable: try again on the next round

    def _release_all(self) -> None:
        while self._held:
            name = self._held.pop()
            try:
                self._call("release_lock", name)
            except DspexError:
                continue  # already expired or preempted: nothing left to release


class Recomputer:
    """Recomputes stale downstream variables in this process, in topological order.

    It follows the session with a watch on a background thread until the session closes or
    :meth:`stop`. A watch that breaks (the store unreachable for a while, a stream that fell
    behind) is logged and opened again with backoff; staleness lives in the records, so the
    recomputer then catches up on whatever went stale meanwhile. A recompute round that fails
    on a store call is logged and retried on the next change, on the same watch.
    """

    def __init__(self, view: _View) -> None:
        self._view = view
        self._callbacks: dict[str, Callable[[Mapping[str, Any]], Any]] = {}
        self._failed = False  # a round failed: try again on the next change of an input
        self._stopped = threading.Event()
        self._watch = view.watch()
        self._thread = threading.Thread(target=self._run, name="dspex-recompute", daemon=True)
        self._thread.start()

    def add(self, name: str, callback: Callable[[Mapping[str, Any]], Any]) -> None:
        """Recompute ``name`` with ``callback`` whenever it becomes stale.

        A callback that raises here (it may already be stale) raises to the caller; later,
        on the background thread, its error is logged and the variable stays stale (its
        record says so) until another variable changes: the thread goes on for the others.
        """
        self._callbacks = {**self._callbacks, name: callback}  # replaced whole: read unlocked
        self._recompute_stale(raising=True)  # it may already be stale

    def stop(self) -> None:
        """Stop following the session."""
        self._stopped.set()
        self._watch.cancel()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while True:
                try:
                    self._follow()
                    return  # the watch ended normally: stopped, or the session closed
                except (SessionNotFoundError, SessionClosedError):
                    return
                except _BROKEN as exc:
                    if self._stopped.is_set():
                        return
                    _log.warning(
                        "recomputing for session %s paused (%s); following it again",
                        self._view.session_id, exc,
                    )  # fmt: skip
                self._watch.cancel()
                if not self._rewatch():
                    return
                self._round()  # what went stale while the watch was down
        except Exception:  # never a silent end: the session's variables would stay stale
            _log.exception("recomputing for session %s stopped", self._view.session_id)
        finally:
            self._watch.cancel()

    def _follow(self) -> None:
        """Recompute on every change that makes a variable stale (or, after a failed
        round, on any change of another variable), until the watch ends."""
        for update in self._watch:
            if update.kind == "stale" or (self._failed and update.name not in self._callbacks):
                self._round()

    def _round(self) -> None:
        """One recompute round on the background thread: a store call that fails is logged,
        and the next change of another variable tries again."""
        try:
            self._recompute_stale()
        except DspexError as exc:
            self._failed = True
            _log.warning(
                "recomputing for session %s failed (%s); trying again on the next change",
                self._view.session_id, exc,
            )  # fmt: skip

    def _rewatch(self) -> bool:
        """Open the watch again, with doubling pauses while the store cannot be reached;
        False once stopped, or when the watch is refused for another reason (logged)."""
        delay = _RETRY_FIRST
        while not self._stopped.wait(delay):
            delay = min(delay * 2, _RETRY_MAX)
            try:
                watch = self._view.watch()
            except _BROKEN:
                continue  # still unreachable
            except DspexError as exc:  # closed session, a limit, a permission: not mended
                if not isinstance(exc, SessionNotFoundError | SessionClosedError):
                    _log.error(
                        "recomputing for session %s stopped: %s", self._view.session_id, exc
                    )
                return False
            self._watch = watch
            if self._stopped.is_set():  # stop() may have cancelled the previous watch only
                watch.cancel()
                return False
            return True
        return False

    def _recompute_stale(self, *, raising: bool = False) -> None:
        provider, session_id = self._view.provider, self._view.session_id
        callbacks = self._callbacks
        edges = provider.get_dependencies(session_id)
        order = _topological({down for _, down in edges} | set(callbacks), edges)
        self._failed = False
        for name in order:
            callback = callbacks.get(name)
            if callback is None:
                continue
            try:
                if not provider.get_variable(session_id, name).stale:
                    continue
                upstream = {up: self._view.get(up) for up, down in edges if down == name}
                self._view.set(name, callback(upstream))
            except DspexError:
                continue  # deleted or refused meanwhile; the record stays stale and says so
            except Exception:
                if raising:
                    raise
                self._failed = True
                _log.exception("recomputing %r failed: it stays stale for now", name)


_BROKEN: Final = (StoreUnavailableError, WatchLaggedError, WatchError)
"""How a watch breaks that following the session again mends."""


def _topological(names: set[str], edges: list[tuple[str, str]]) -> list[str]:
    indegree = {n: 0 for n in names}
    for up, down in edges:
        if up in indegree and down in indegree:
            indegree[down] += 1
    ready = sorted(n for n, d in indegree.items() if d == 0)
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for up, down in edges:
            if up == current and down in indegree:
                indegree[down] -= 1
                if indegree[down] == 0:
                    ready.append(down)
        ready.sort()
    return order
