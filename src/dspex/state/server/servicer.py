"""Server side: the session-store servicer on ``grpc.aio``, wrapping any StateProvider.

The servicer adds transport, access control and limits, not semantics: every method converts the
request, checks the caller's permission, delegates to the provider (a
:class:`~dspex.state.core.semantics.EngineProvider` by default, the one home of validation,
versions, history, watch, dependencies and locks) and converts the result. The call prologue
(authentication, identity ContextVars, error mapping) lives in :mod:`dspex.state.server.calls`;
watch streams read their session's shared feed (:mod:`dspex.state.server.feed`), woken as
described in :mod:`dspex.state.server.wakeups`; the dependency and
lock RPCs are in :mod:`dspex.state.server.locking`.
"""

# ruff: noqa: N802 - servicer methods carry the CamelCase RPC names of the proto

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from dspex.errors import DspexError, StoreUnavailableError, WatchLaggedError
from dspex.state.core.contract import StateProvider
from dspex.state.server import convert
from dspex.state.server.calls import CallInfo, checked, enter_call, reset, run_sync, unary
from dspex.state.server.feed import SessionFeed, shown_payloads
from dspex.state.server.guard import AccessGuard
from dspex.state.server.locking import LockingRpcs
from dspex.state.server.observe import StoreEvents
from dspex.state.server.streams import (
    FeedReader,
    WatchPlan,
    heartbeat,
    open_backlog,
    send,
    shown,
)
from dspex.state.server.wakeups import HEARTBEAT, StreamWaiter, StreamWakeups
from dspex.state.wire.status import abort

__all__ = ["SessionStoreServicer", "StoreLimits"]

_READ_ATTEMPTS: Final = 8
"""Reads of GetVariables before it settles for the newest record revision."""


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Input limits of one store server.

    Attributes:
        max_message_bytes: largest request accepted (grpc answers RESOURCE_EXHAUSTED above it).
        max_value_bytes: largest single value (JSON text or array bytes) accepted; larger
            values are refused with ``LimitExceededError`` (RESOURCE_EXHAUSTED).
        heartbeat_interval: seconds of silence after which a watch stream gets a heartbeat.
        session_ttl: TTL (seconds without heartbeat) of sessions created without one; None
            keeps such sessions until they are closed.
        max_concurrent_calls: calls and streams in progress at once (None: unbounded); grpc
            answers RESOURCE_EXHAUSTED above it, which clients report as an overloaded store.
        snakepit_compat: also serve ``snakepit.bridge.BridgeService``, the original bridge's
            protocol, over the same sessions (``dspex serve --snakepit-compat``).
    """

    max_message_bytes: int = 32 * 1024 * 1024
    max_value_bytes: int = 16 * 1024 * 1024
    heartbeat_interval: float = 15.0
    session_ttl: float | None = None
    max_concurrent_calls: int | None = None
    snakepit_compat: bool = False


def may_block(provider: StateProvider) -> bool:
    """True unless the provider answers from memory (then calls run on the event loop).

    The provider says so through its ``blocks`` property: an EngineProvider asks its engine
    (memory never; SQLite, a memory image written through, only when it flushes every write to
    disk with ``fsync``; Redis always). A provider without one is assumed to block.
    """
    return bool(getattr(provider, "blocks", True))


class SessionStoreServicer(LockingRpcs):
    """The ``dspex.bridge.v1.SessionStore`` service over one provider.

    Args:
        provider: where sessions live.
        limits: input limits, the watch heartbeat interval and the default session TTL.
        guard: access control (None: every call is allowed).
        offload: run provider calls in worker threads so a provider that blocks (SQLite,
            Redis) never stalls the event loop; by default, unless the provider is in memory.
        events: told of lock waits, lagging watches and tool calls (server metrics).
    """

    def __init__(
        self,
        provider: StateProvider,
        limits: StoreLimits | None = None,
        *,
        guard: AccessGuard | None = None,
        offload: bool | None = None,
        events: StoreEvents | None = None,
    ) -> None:
        super().__init__()
        self.provider = provider
        self.limits = limits or StoreLimits()
        self.guard = guard
        self.offload = may_block(provider) if offload is None else offload
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="dspex-store")
        # The provider's set that commits off the event loop (SQLite with fsync), if any. Its
        # checks read the engine's memory image, so they run on the loop; other blocking
        # engines (Redis) check and set in a worker thread.
        commits_later = self.offload and getattr(provider, "commits_later", False)
        self._set_later = provider.set_variable_later if commits_later else None  # type: ignore[attr-defined]
        self.stopping = False
        self._hub: StreamWakeups | None = None
        self.events = events or StoreEvents()
        self._max_value = self.limits.max_value_bytes

    @property
    def hub(self) -> StreamWakeups:
        """Wake-ups for watch streams (created on the server's event loop)."""
        if self._hub is None:
            loop = asyncio.get_running_loop()
            self._hub = StreamWakeups(self.provider, loop, self.limits.heartbeat_interval)
        return self._hub

    @property
    def watch_count(self) -> int:
        """Number of open watch streams."""
        return 0 if self._hub is None else self._hub.stream_count

    def _allow(self, call: CallInfo, permission: str, session_id: str, *names: str) -> None:
        """Refuse the call unless the caller's ``permission`` covers ``names`` (AccessGuard)."""
        if self.guard is not None:
            self.guard.require(call.principal, permission, session_id, names)

    # -- health and sessions --------------------------------------------------------------

    @unary()
    def Ping(self, request: Any, call: CallInfo) -> Any:
        return convert.ping_response(convert.read_ping(request), time.time())

    @unary()
    def CreateSession(self, request: Any, call: CallInfo) -> Any:
        session_id, ttl = convert.read_create_session(request)
        if self.guard is not None:
            self.guard.may_join(call.principal, session_id)
        ttl = self.limits.session_ttl if ttl is None else ttl
        return convert.create_session_response(self.provider.create_session(session_id, ttl=ttl))

    @unary()
    def GetSession(self, request: Any, call: CallInfo) -> Any:
        session_id = convert.read_session_id(request)
        self._allow(call, "read", session_id)
        return convert.session_response(self.provider.get_session(session_id))

    @unary()
    def ListSessions(self, request: Any, call: CallInfo) -> Any:
        size, token = convert.read_list_sessions(request)
        infos = self.provider.list_sessions()
        if self.guard is not None:
            infos = self.guard.readable_sessions(call.principal, infos)
        return convert.sessions_response(*convert.sessions_page(infos, size, token))

    @unary()
    def Heartbeat(self, request: Any, call: CallInfo) -> Any:
        session_id = convert.read_session_id(request)
        self._allow(call, "write", session_id)  # keeping a session alive is a change to it
        self.provider.heartbeat(session_id)
        return convert.empty_response("Heartbeat")

    @unary()
    def CloseSession(self, request: Any, call: CallInfo) -> Any:
        session_id = convert.read_session_id(request)
        if self.guard is not None:
            self.guard.require_whole(call.principal, "write", session_id)
        self.provider.close_session(session_id)
        return convert.empty_response("CloseSession")

    # -- variables ------------------------------------------------------------------------

    @unary(writes=True)
    def RegisterVariable(self, request: Any, call: CallInfo) -> Any:
        sid, name, spec, value, metadata = convert.read_register(request, self._max_value)
        self._allow(call, "write", sid, name)
        record = self.provider.register_variable(sid, name, spec, value, metadata=metadata)
        return convert.record_response("RegisterVariable", record)

    @unary()
    def GetVariable(self, request: Any, call: CallInfo) -> Any:
        sid, name = convert.read_variable(request)
        self._allow(call, "read", sid, name)
        return convert.record_response("GetVariable", self.provider.get_variable(sid, name))

    @unary()
    def GetVariables(self, request: Any, call: CallInfo) -> Any:
        sid, names = convert.read_get_variables(request)
        self._allow(call, "read", sid, *names)
        records, revision = self._read_at_one_revision(sid, names)
        response = convert.records_response("GetVariables", (records[n] for n in names))
        response.revision = revision
        return response

    def _read_at_one_revision(
        self, session_id: str, names: list[str]
    ) -> tuple[dict[str, Any], int]:
        """The records and the session revision at which all of them were current: the read
        is repeated (rarely) until no write landed between the revision and the records."""
        for _ in range(_READ_ATTEMPTS):
            before = self.provider.get_session(session_id).revision
            records = self.provider.get_variables(session_id, names)
            if self.provider.get_session(session_id).revision == before:
                return records, before
        # Writes never paused: every record is current at least as of its own revision.
        return records, max((r.revision for r in records.values()), default=before)

    @unary(writes=True)
    async def SetVariable(self, request: Any, call: CallInfo) -> Any:
        sid, name, value, expected = convert.read_set(request, self._max_value)
        later = self._set_later  # an engine committing off the loop: no thread per set
        if later is not None:
            self._allow(call, "write", sid, name)
            pending = later(sid, name, value, expected_version=expected)
            if pending is not None:
                return convert.record_response("SetVariable", await pending)
        if self.offload:
            record = await run_sync(self, self._set_now, call, sid, name, value, expected)
        else:
            record = self._set_now(call, sid, name, value, expected)
        return convert.record_response("SetVariable", record)

    def _set_now(
        self, call: CallInfo, session_id: str, name: str, value: Any, expected: int | None
    ) -> Any:
        """The set, checked and committed by the calling thread (a worker thread when the
        provider may block: checking access may read the session from Redis)."""
        self._allow(call, "write", session_id, name)
        return self.provider.set_variable(session_id, name, value, expected_version=expected)

    @unary(writes=True)
    def UpdateVariables(self, request: Any, call: CallInfo) -> Any:
        sid, values, atomic, expected = convert.read_update(request, self._max_value)
        self._allow(call, "write", sid, *values)
        results = self.provider.update_variables(
            sid, values, atomic=atomic, expected_versions=expected
        )
        return convert.update_response(results)

    @unary()
    def ListVariables(self, request: Any, call: CallInfo) -> Any:
        sid, pattern = convert.read_list(request)
        readable = None if self.guard is None else self.guard.filter(call.principal, "read", sid)
        records = self.provider.list_variables(sid, pattern)
        if readable is not None:
            records = [r for r in records if readable(r.name)]
        return convert.records_response("ListVariables", records)

    @unary(writes=True)
    def DeleteVariable(self, request: Any, call: CallInfo) -> Any:
        sid, name = convert.read_variable(request)
        self._allow(call, "write", sid, name)
        self.provider.delete_variable(sid, name)
        return convert.empty_response("DeleteVariable")

    @unary()
    def GetHistory(self, request: Any, call: CallInfo) -> Any:
        sid, name, limit = convert.read_history(request)
        self._allow(call, "read", sid, name)
        records = self.provider.get_history(sid, name, limit)
        return convert.records_response("GetHistory", records)

    @unary(writes=True)
    def RollbackVariable(self, request: Any, call: CallInfo) -> Any:
        sid, name, version = convert.read_rollback(request)
        self._allow(call, "write", sid, name)
        record = self.provider.rollback_variable(sid, name, version)
        return convert.record_response("RollbackVariable", record)

    # -- watch ----------------------------------------------------------------------------

    async def WatchVariables(self, request: Any, context: Any) -> None:
        resets: list[Any] = []
        try:
            call, resets = enter_call(context, self.guard)
            sid, names, after, initial, coalesce, linger = convert.read_watch(checked(request))
            visible = await run_sync(self, self._observable, call, sid, names)
            key = (frozenset(names), None if visible is None else call.principal)
            filtered = shown(frozenset(names), visible)
            plan = WatchPlan(after, initial, filtered, key, coalesce, linger)
            await self._stream(sid, plan, context)
        except DspexError as exc:
            if isinstance(exc, WatchLaggedError):
                self.events.watch_lagged()
            await abort(context, exc)
        finally:
            reset(resets)

    def _observable(
        self, call: CallInfo, session_id: str, names: list[str]
    ) -> Callable[[str], bool] | None:
        """None when every update may be sent; else a filter of the observable names.

        Raises:
            PermissionDeniedError: a named variable (or, unnamed, every one) is not observable.
        """
        if self.guard is None:
            return None
        if names:
            self.guard.require(call.principal, "observe", session_id, names)
            return None
        return self.guard.filter(call.principal, "observe", session_id)

    async def _stream(self, session_id: str, plan: WatchPlan, context: Any) -> None:
        """Send the session's updates through ``plan``'s filter until the watch ends, the
        client leaves or the server stops.

        Raises:
            DspexError: the watch ended abnormally (lagged, session expired) or the server is
                stopping.
        """
        waiter = StreamWaiter(asyncio.get_running_loop())
        feed = self.hub.join(session_id, waiter)  # first: the feed covers what the backlog won't
        try:
            backlog = await run_sync(self, open_backlog, self.provider, session_id, plan)
            head = (await run_sync(self, self.provider.get_session, session_id)).revision
            payloads = shown_payloads(backlog.entries, plan.shown)
            started = convert.watch_started(backlog.start, head, feed.size, len(payloads))
            await context.write(started.SerializeToString())
            await send(context, waiter, payloads)
            if backlog.ended is not None:
                raise backlog.ended
            await self._follow(feed, plan, waiter, backlog.covered, context)
        finally:  # also on client disconnect (the task is cancelled) and on abort
            self.hub.leave(feed, waiter)

    async def _follow(
        self, feed: SessionFeed, plan: WatchPlan, waiter: StreamWaiter, covered: int, context: Any
    ) -> None:
        """Send the feed's entries after revision ``covered`` until the feed ends.

        Raises:
            DspexError: how the stream ended abnormally (lagged, expired, server stopping).
        """
        reader = FeedReader(feed, plan, covered)
        if plan.linger:  # news from the start is held too (not only news that wakes it)
            await waiter.pause(plan.linger)
        while True:
            self._check_stopping(reader.covered)
            payloads = reader.take()
            if payloads is None:
                return
            if payloads:
                await send(context, waiter, payloads)
                if reader.pending:  # more to send: the session's other streams go first
                    await self.hub.turn(feed, waiter)
            elif await self.hub.idle(feed, waiter) is HEARTBEAT:
                await send(context, waiter, [heartbeat()])
            elif plan.linger:  # news: hold it, to send it with what follows meanwhile
                await waiter.pause(plan.linger)

    def _check_stopping(self, covered: int) -> None:
        if self.stopping:
            raise StoreUnavailableError(
                "the session store is shutting down; watch again with "
                f"after_revision={covered} once it is back",
                resume_from=covered,
            )

    def begin_shutdown(self) -> None:
        """End every watch stream with a "resume from revision N" error, and every HoldLocks
        stream (their locks are released)."""
        self.stopping = True
        if self._hub is not None:
            self._hub.wake_all()
        self.end_holders()

    def close(self) -> None:
        """Release the watch pumps and worker threads (after the server stopped)."""
        if self._hub is not None:
            self._hub.close()
        self.executor.shutdown(wait=False)  # queued lock releases still run
