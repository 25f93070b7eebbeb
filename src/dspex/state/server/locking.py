"""Server side: the dependency and optimization-lock RPCs of the store servicer.

The semantics are the provider's (:mod:`dspex.state.core.locks`,
:mod:`dspex.state.core.dependencies`); this mixin adds what only a server can: a lock taken with
policy ``"wait"`` waits on the event loop (retrying ``"fail"``; no thread is held, and a caller
that goes away stops the wait), and locks are tied to the client's ``HoldLocks`` stream so they
are released as soon as that stream ends (see :mod:`dspex.state.server.holders`).
"""

# ruff: noqa: N802 - servicer methods carry the CamelCase RPC names of the proto

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Final

from dspex.errors import DspexError, LockedError, StoreUnavailableError
from dspex.state.core.contract import StateProvider
from dspex.state.core.locks import still_locked
from dspex.state.server import convert
from dspex.state.server.calls import CallInfo, checked, enter_call, reset, run_sync, unary
from dspex.state.server.guard import AccessGuard
from dspex.state.server.holders import HeldLock, LockHolders
from dspex.state.server.observe import StoreEvents
from dspex.state.wire.status import abort

if TYPE_CHECKING:
    from dspex.state.server.servicer import StoreLimits

__all__ = ["LockingRpcs"]

_log = logging.getLogger("dspex.store")

_LOCK_POLL: Final = 0.02
"""Seconds between attempts of a waiting AcquireLock."""
_DEADLINE_MARGIN: Final = 0.25
"""A waiting AcquireLock gives up this long before the caller's deadline, to answer clearly."""


class LockingRpcs:
    """AddDependency, GetDependents, GetDependencies, AcquireLock, ReleaseLock, RenewLock and
    HoldLocks, mixed into :class:`~dspex.state.server.servicer.SessionStoreServicer`."""

    provider: StateProvider
    guard: AccessGuard | None
    offload: bool
    executor: Executor
    limits: StoreLimits
    stopping: bool
    events: StoreEvents

    def __init__(self) -> None:
        self.holders = LockHolders()
        self.lock_waiters = 0
        """AcquireLock calls waiting for a taken lock now."""
        self._holders_end: asyncio.Event | None = None

    # -- dependencies ---------------------------------------------------------------------

    @unary()
    def AddDependency(self, request: Any, call: CallInfo) -> Any:
        sid, upstream, downstream = convert.read_dependency(request)
        if self.guard is not None:
            self.guard.require(call.principal, "read", sid, (upstream,))
            self.guard.require(call.principal, "write", sid, (downstream,))
        self.provider.add_dependency(sid, upstream, downstream)
        return convert.empty_response("AddDependency")

    @unary()
    def GetDependents(self, request: Any, call: CallInfo) -> Any:
        sid, name = convert.read_variable(request)
        readable = self._readable(call, sid, name)
        names = self.provider.get_dependents(sid, name)
        return convert.dependents_response(n for n in names if readable(n))

    @unary()
    def GetDependencies(self, request: Any, call: CallInfo) -> Any:
        sid = convert.read_session_id(request)
        readable = self._readable(call, sid)
        edges = self.provider.get_dependencies(sid)
        return convert.dependencies_response(
            (up, down) for up, down in edges if readable(up) and readable(down)
        )

    def _readable(self, call: CallInfo, session_id: str, *names: str) -> Callable[[str], bool]:
        """Which names the caller may read (all without access control); ``names`` must be.

        Raises:
            PermissionDeniedError: one of ``names`` (or the whole session) is not readable.
        """
        if self.guard is None:
            return lambda _name: True
        if names:
            self.guard.require(call.principal, "read", session_id, names)
        return self.guard.filter(call.principal, "read", session_id)

    # -- optimization locks ---------------------------------------------------------------

    @unary(writes=True)
    async def AcquireLock(self, request: Any, call: CallInfo) -> Any:
        sid, name, owner, optimizer_id, lease, policy, timeout = convert.read_acquire(request)
        await run_sync(self, self._allow_optimize, call, sid, name)
        if call.holder is not None and not self.holders.is_open(call.holder):
            raise _holder_gone()
        deadline = _wait_deadline(timeout, call.deadline)
        take = functools.partial(
            self.provider.acquire_lock, sid, name, owner=owner, optimizer_id=optimizer_id,
            lease=lease, policy="fail" if policy == "wait" else policy,
        )  # fmt: skip
        record = await self._take(take, policy == "wait", deadline)
        held: HeldLock = (sid, name, owner)
        if call.holder is not None and not self.holders.attach(call.holder, held):
            await run_sync(self, self._release_all, [held])
            raise _holder_gone()
        return convert.record_response("AcquireLock", record)

    async def _take(self, take: Callable[[], Any], wait: bool, deadline: float | None) -> Any:
        """The lock's record once ``take`` succeeds; retried while ``wait`` and before
        ``deadline``. A wait is counted in :attr:`lock_waiters` and reported to ``events``.

        Raises:
            LockedError: the lock is taken and the call does not (or no longer) wait.
        """
        try:
            return await run_sync(self, take)
        except LockedError:
            if not wait or _past(deadline):
                raise
        started = time.monotonic()
        self.lock_waiters += 1
        acquired = False
        try:
            while True:
                await asyncio.sleep(_LOCK_POLL)
                try:
                    record = await run_sync(self, take)
                except LockedError as refused:
                    if _past(deadline):
                        raise still_locked(refused, time.monotonic() - started) from None
                    continue
                acquired = True
                return record
        finally:
            self.lock_waiters -= 1
            self.events.lock_waited(time.monotonic() - started, acquired)

    @unary(writes=True)
    def ReleaseLock(self, request: Any, call: CallInfo) -> Any:
        sid, name, owner = convert.read_release(request)
        self._allow_optimize(call, sid, name)
        record = self.provider.release_lock(sid, name, owner=owner)
        self.holders.detach((sid, name, owner))
        return convert.record_response("ReleaseLock", record)

    @unary(writes=True)
    def RenewLock(self, request: Any, call: CallInfo) -> Any:
        sid, name, owner, progress = convert.read_renew(request)
        self._allow_optimize(call, sid, name)
        record = self.provider.renew_lock(sid, name, owner=owner, progress=progress)
        return convert.record_response("RenewLock", record)

    def _allow_optimize(self, call: CallInfo, session_id: str, name: str) -> None:
        if self.guard is not None:
            self.guard.require(call.principal, "optimize", session_id, (name,))

    async def HoldLocks(self, request: Any, context: Any) -> None:
        resets: list[Any] = []
        holder_id: str | None = None
        try:
            _call, resets = enter_call(context, self.guard)
            checked(request)
            if self._holders_end is None:
                self._holders_end = asyncio.Event()
            holder_id = self.holders.open()
            await context.write(convert.hold_locks_message(holder_id, time.time()))
            while not self.stopping:
                try:
                    interval = self.limits.heartbeat_interval
                    await asyncio.wait_for(self._holders_end.wait(), interval)
                except asyncio.TimeoutError:
                    await context.write(convert.hold_locks_message("", time.time()))
        except DspexError as exc:
            await abort(context, exc)
        finally:  # also when the client went away (the task is cancelled)
            reset(resets)
            if holder_id is not None:
                self._release_later(self.holders.close(holder_id))

    def end_holders(self) -> None:
        """End every HoldLocks stream (the server is stopping); their locks are released."""
        if self._holders_end is not None:
            self._holders_end.set()

    def _release_later(self, locks: list[HeldLock]) -> None:
        """Release ``locks`` in a worker thread (this may run while the task is cancelled)."""
        if not locks:
            return
        try:
            self.executor.submit(self._release_all, locks)
        except RuntimeError:  # the executor is shut down: the server is gone
            self._release_all(locks)

    def _release_all(self, locks: list[HeldLock]) -> None:
        for session_id, name, owner in locks:
            try:
                self.provider.release_lock(session_id, name, owner=owner)
            except DspexError:
                continue  # preempted, expired with the session, or gone: nothing to release
            except Exception:  # never let one failure keep the others locked
                _log.exception("releasing lock %r of session %r failed", name, session_id)


def _wait_deadline(timeout: float | None, call_deadline: float | None) -> float | None:
    """When a waiting acquire gives up: after ``timeout``, and before the caller's deadline."""
    now = time.monotonic()
    ends = [] if timeout is None else [now + timeout]
    if call_deadline is not None:
        ends.append(call_deadline - _DEADLINE_MARGIN)
    return min(ends) if ends else None


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _holder_gone() -> StoreUnavailableError:
    return StoreUnavailableError(
        "the connection that holds this client's locks (its HoldLocks stream) has ended; "
        "the lock was not taken: acquire it again"
    )
