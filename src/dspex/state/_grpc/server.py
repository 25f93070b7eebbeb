"""Layer 2, gRPC adapter: the session-store servicer on ``grpc.aio``, wrapping any StateProvider.

The servicer adds transport, limits and error mapping, not semantics: every method converts the
request, delegates to the provider (a :class:`~dspex.state.LocalProvider` by default, the one
home of validation, versions, history and watch) and converts the result. Watch streams read an
ordinary provider watch; see :mod:`dspex.state._grpc._hub` for how they are woken.
"""

# ruff: noqa: N802 - servicer methods carry the CamelCase RPC names of the proto

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from dspex.errors import DspexError, StoreProtocolError, StoreUnavailableError
from dspex.state import current_writer
from dspex.state._grpc._channel import WRITER_KEY
from dspex.state._grpc._convert import server as convert
from dspex.state._grpc._hub import HEARTBEAT, StreamWaiter, WatchHub
from dspex.state._grpc._status import abort, internal_error
from dspex.state._provider import StateProvider
from dspex.state._watch import VariableWatch

__all__ = ["SessionStoreServicer", "StoreLimits"]

_BATCH: Final = 256
"""Most updates a stream drains before yielding to other streams."""

_Handler = Callable[[Any, Any, Any], Any]
_AsyncHandler = Callable[[Any, Any, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Input limits of one store server.

    Attributes:
        max_message_bytes: largest request accepted (grpc answers RESOURCE_EXHAUSTED above it).
        max_value_bytes: largest single value (JSON text or array bytes) accepted; larger
            values are refused with ``LimitExceededError`` (RESOURCE_EXHAUSTED).
        heartbeat_interval: seconds of silence after which a watch stream gets a heartbeat.
    """

    max_message_bytes: int = 32 * 1024 * 1024
    max_value_bytes: int = 16 * 1024 * 1024
    heartbeat_interval: float = 15.0


def _writer_of(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == WRITER_KEY:
            return str(value)
    return str(context.peer())


def _checked(request: Any) -> Any:
    """The request, unless its bytes could not be parsed.

    Raises:
        StoreProtocolError: the request is malformed.
    """
    if isinstance(request, convert.Malformed):
        raise StoreProtocolError(f"malformed request: {request.reason}")
    return request


def _unary(*, writes: bool = False) -> Callable[[_Handler], _AsyncHandler]:
    """Run a sync servicer method as an aio handler; any error ends the call with its status."""

    def decorate(method: _Handler) -> _AsyncHandler:
        @functools.wraps(method)
        async def handler(self: Any, request: Any, context: Any) -> Any:
            token = current_writer.set(_writer_of(context)) if writes else None
            try:
                return method(self, _checked(request), context)
            except DspexError as exc:
                await abort(context, exc)
            except Exception as exc:
                await abort(context, internal_error(exc))
            finally:
                if token is not None:
                    current_writer.reset(token)

        return handler

    return decorate


def _drain(watch: VariableWatch, limit: int | None) -> tuple[list[Any], DspexError | None]:
    """Take what is queued without blocking (at most ``limit``), and how the watch ended."""
    batch: list[Any] = []
    try:
        while (limit is None or len(batch) < limit) and (update := watch.poll(0)) is not None:
            batch.append(update)
    except DspexError as exc:
        return batch, exc
    return batch, None


class SessionStoreServicer:
    """The ``dspex.bridge.v1.SessionStore`` service over one provider.

    Args:
        provider: where sessions live; called on the event loop, so it must not block for long
            (in-memory providers answer in microseconds).
        limits: input limits and the watch heartbeat interval.
    """

    def __init__(self, provider: StateProvider, limits: StoreLimits | None = None) -> None:
        self.provider = provider
        self.limits = limits or StoreLimits()
        self.stopping = False
        self._hub: WatchHub | None = None
        self._max_value = self.limits.max_value_bytes

    @property
    def hub(self) -> WatchHub:
        """Wake-ups for watch streams (created on the server's event loop)."""
        if self._hub is None:
            loop = asyncio.get_running_loop()
            self._hub = WatchHub(self.provider, loop, self.limits.heartbeat_interval)
        return self._hub

    @property
    def watch_count(self) -> int:
        """Number of open watch streams."""
        return 0 if self._hub is None else self._hub.stream_count

    # -- health and sessions --------------------------------------------------------------

    @_unary()
    def Ping(self, request: Any, context: Any) -> Any:
        return convert.ping_response(convert.read_ping(request), time.time())

    @_unary()
    def CreateSession(self, request: Any, context: Any) -> Any:
        session_id, ttl = convert.read_create_session(request)
        return convert.create_session_response(self.provider.create_session(session_id, ttl=ttl))

    @_unary()
    def GetSession(self, request: Any, context: Any) -> Any:
        info = self.provider.get_session(convert.read_session_id(request))
        return convert.session_response(info)

    @_unary()
    def ListSessions(self, request: Any, context: Any) -> Any:
        return convert.sessions_response(self.provider.list_sessions())

    @_unary()
    def Heartbeat(self, request: Any, context: Any) -> Any:
        self.provider.heartbeat(convert.read_session_id(request))
        return convert.empty_response("Heartbeat")

    @_unary()
    def CloseSession(self, request: Any, context: Any) -> Any:
        self.provider.close_session(convert.read_session_id(request))
        return convert.empty_response("CloseSession")

    # -- variables ------------------------------------------------------------------------

    @_unary(writes=True)
    def RegisterVariable(self, request: Any, context: Any) -> Any:
        sid, name, spec, value, metadata = convert.read_register(request, self._max_value)
        record = self.provider.register_variable(sid, name, spec, value, metadata=metadata)
        return convert.record_response("RegisterVariable", record)

    @_unary()
    def GetVariable(self, request: Any, context: Any) -> Any:
        sid, name = convert.read_variable(request)
        return convert.record_response("GetVariable", self.provider.get_variable(sid, name))

    @_unary()
    def GetVariables(self, request: Any, context: Any) -> Any:
        sid, names = convert.read_get_variables(request)
        records = self.provider.get_variables(sid, names)
        return convert.records_response("GetVariables", (records[n] for n in names))

    @_unary(writes=True)
    def SetVariable(self, request: Any, context: Any) -> Any:
        sid, name, value, expected = convert.read_set(request, self._max_value)
        record = self.provider.set_variable(sid, name, value, expected_version=expected)
        return convert.record_response("SetVariable", record)

    @_unary(writes=True)
    def UpdateVariables(self, request: Any, context: Any) -> Any:
        sid, values, atomic, expected = convert.read_update(request, self._max_value)
        results = self.provider.update_variables(
            sid, values, atomic=atomic, expected_versions=expected
        )
        return convert.update_response(results)

    @_unary()
    def ListVariables(self, request: Any, context: Any) -> Any:
        sid, pattern = convert.read_list(request)
        return convert.records_response(
            "ListVariables", self.provider.list_variables(sid, pattern)
        )

    @_unary(writes=True)
    def DeleteVariable(self, request: Any, context: Any) -> Any:
        sid, name = convert.read_variable(request)
        self.provider.delete_variable(sid, name)
        return convert.empty_response("DeleteVariable")

    @_unary()
    def GetHistory(self, request: Any, context: Any) -> Any:
        sid, name, limit = convert.read_history(request)
        records = self.provider.get_history(sid, name, limit)
        return convert.records_response("GetHistory", records)

    @_unary(writes=True)
    def RollbackVariable(self, request: Any, context: Any) -> Any:
        sid, name, version = convert.read_rollback(request)
        record = self.provider.rollback_variable(sid, name, version)
        return convert.record_response("RollbackVariable", record)

    # -- watch ----------------------------------------------------------------------------

    async def WatchVariables(self, request: Any, context: Any) -> None:
        try:
            sid, names, after, initial = convert.read_watch(_checked(request))
            watch = self.provider.watch_variables(
                sid, names, after_revision=after, include_initial=initial
            )
        except DspexError as exc:
            await abort(context, exc)
        try:
            await self._stream(sid, watch, context)
        except DspexError as exc:
            await abort(context, exc)

    async def _stream(self, session_id: str, watch: VariableWatch, context: Any) -> None:
        """Send the watch's updates until it ends, the client leaves or the server stops.

        Raises:
            DspexError: the watch ended abnormally (lagged) or the server is stopping.
        """
        waiter = StreamWaiter(asyncio.get_running_loop())
        try:
            self.hub.join(session_id, waiter)
            head = self.provider.get_session(session_id).revision
            queue_size = getattr(self.provider, "watch_queue_size", 0)
            start = watch.last_revision
            batch, ended = _drain(watch, None)  # the backlog: initial records, replayed changes
            await context.write(convert.watch_started(start, head, queue_size, len(batch)))
            while await self._send(watch, waiter, batch, ended, context):
                self._check_stopping(watch)
                waiter.arm()  # before draining, so a change queued meanwhile wakes it
                batch, ended = _drain(watch, _BATCH)
                idle = not batch and ended is None and not watch.closed
                if idle and await waiter.wait() is HEARTBEAT:
                    await context.write(convert.watch_heartbeat(time.time()))
                    waiter.last_sent = time.monotonic()
        finally:  # also on client disconnect (the task is cancelled) and on abort
            watch.cancel()
            self.hub.leave(session_id, waiter)

    @staticmethod
    async def _send(
        watch: VariableWatch,
        waiter: StreamWaiter,
        batch: list[Any],
        ended: DspexError | None,
        context: Any,
    ) -> bool:
        """Write ``batch``; False once the watch ended normally; raise how it ended otherwise."""
        for update in batch:
            await context.write(convert.watch_update(update))
        if batch:
            waiter.last_sent = time.monotonic()
        if ended is not None:
            raise ended
        return not watch.closed

    def _check_stopping(self, watch: VariableWatch) -> None:
        if self.stopping:
            raise StoreUnavailableError(
                "the session store is shutting down; watch again with "
                f"after_revision={watch.last_revision} once it is back",
                resume_from=watch.last_revision,
            )

    def begin_shutdown(self) -> None:
        """End every watch stream with a "resume from revision N" error."""
        self.stopping = True
        if self._hub is not None:
            self._hub.wake_all()

    def close(self) -> None:
        """Release the watch pumps (after the server stopped)."""
        if self._hub is not None:
            self._hub.close()
