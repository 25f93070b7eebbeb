"""Server side: the ``dspex.bridge.v1.ToolStore`` servicer (cross-process tools).

It routes calls; it never runs a tool. An owner process registers its tools and keeps a
``ServeTools`` stream open; ``CallTool`` from any process of the session is queued on that
stream (see :mod:`dspex.state.server.tool_routes`) and answered when the owner sends
``ReturnToolResult``, when the call's timeout passes, or at once when the owner's stream ends.

It shares the session store's provider, access guard and worker threads: every call first
checks that the session is open and that the caller may use it (``read`` to list tools,
``write`` to call one, ``serve`` on the tool's name to register it, ``serve`` on some tool to
serve, answer or unregister). Owner ids are bound to the principal that first used them, and
once served to the serving key of their first ``ServeTools`` stream (see the hub): another
principal cannot take over, shadow or answer for a tool, and another connection of the same
principal cannot serve, reshape or remove a served owner's tools. Every method runs on the
server's event loop, where the hub lives.
"""

# ruff: noqa: N802 - servicer methods carry the CamelCase RPC names of the proto

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Final

from dspex._proto.bridge.v1 import tools_pb2
from dspex.errors import (
    DspexError,
    LimitExceededError,
    SessionError,
    StoreUnavailableError,
    ToolTimeoutError,
)
from dspex.state.server.calls import CallInfo, checked, enter_call, reset, run_sync, unary
from dspex.state.server.handlers import register_service, service_methods
from dspex.state.server.observe import CallObserver
from dspex.state.server.servicer import SessionStoreServicer
from dspex.state.server.tool_arguments import arguments_failure
from dspex.state.server.tool_routes import PendingCall, ToolHub
from dspex.state.wire import tools as convert
from dspex.state.wire.status import abort

__all__ = ["ToolStoreServicer", "add_tool_store"]

_DEADLINE_MARGIN: Final = 0.25
"""A call gives up this long before the caller's own deadline, to answer with a clear error."""


class ToolStoreServicer:
    """Routes tool calls between the processes of a session.

    Args:
        store: the session-store servicer of the same server (its provider, guard, limits and
            worker threads are shared).
    """

    def __init__(self, store: SessionStoreServicer) -> None:
        self.provider = store.provider
        self.guard = store.guard
        self.offload = store.offload
        self.executor = store.executor
        self.limits = store.limits
        self.hub = ToolHub()
        self.stopping = False
        self.events = store.events

    def _check(
        self, call: CallInfo, permission: str, session_id: str, tool: str | None = None
    ) -> None:
        """Raises SessionError (not open) or AccessError (not allowed): ``serve`` is checked
        against the tool name (or, without one, against some tool of the session)."""
        self.provider.get_session(session_id)
        if self.guard is None:
            return
        if tool is not None:
            self.guard.require_tool(call.principal, permission, session_id, tool)
        else:
            self.guard.require(call.principal, permission, session_id)

    async def _allow(
        self, call: CallInfo, permission: str, session_id: str, *, tool: str | None = None
    ) -> None:
        try:
            await run_sync(self, self._check, call, permission, session_id, tool)
        except SessionError:
            self.hub.drop_session(session_id)
            raise

    # -- registration --------------------------------------------------------------------

    @unary()
    async def RegisterTool(self, request: Any, call: CallInfo) -> Any:
        session_id, owner, key, spec = convert.read_register(request)
        await self._allow(call, "serve", session_id, tool=spec.name)
        self.hub.authorize(session_id, owner, call.principal, key)
        connected = self.hub.register(session_id, owner, spec)
        return convert.register_response(spec, owner, connected)

    @unary()
    async def UnregisterTools(self, request: Any, call: CallInfo) -> Any:
        session_id, owner, key, names = convert.read_unregister(request)
        await self._allow(call, "serve", session_id)
        self.hub.authorize(session_id, owner, call.principal, key)
        return convert.unregister_response(self.hub.unregister(session_id, owner, names))

    @unary()
    async def ListTools(self, request: Any, call: CallInfo) -> Any:
        session_id = convert.read_list(request)
        await self._allow(call, "read", session_id)
        return convert.list_response(self.hub.listing(session_id))

    # -- calls ---------------------------------------------------------------------------

    @unary()
    async def CallTool(self, request: Any, call: CallInfo) -> Any:
        session_id, name, arguments_json, timeout = convert.read_call(request)
        self._check_size(name, arguments_json, "arguments")
        await self._allow(call, "write", session_id)
        entry = self.hub.entry(session_id, name)
        if entry is not None:  # the store checks arguments for owners in every language
            refused = arguments_failure(name, entry[0].parameters_json, arguments_json)
            if refused is not None:  # counted as the owner's own refusal was: "raised"
                self.events.tool_called(name, "raised")
                return convert.call_response(("", refused), entry[1])
        verdict = "failed"
        try:
            pending = self.hub.submit(session_id, name, arguments_json)
            wait = _wait_time(timeout, call.deadline)
            try:
                outcome = await asyncio.wait_for(pending.future, wait)
            except asyncio.TimeoutError:
                raise _timed_out(pending, timeout if timeout is not None else wait) from None
            finally:  # also when the caller went away (this task is cancelled)
                self.hub.forget(pending)
            verdict = "ok" if outcome[1] is None else "raised"
        finally:
            self.events.tool_called(name, verdict)
        return convert.call_response(outcome, pending.stream.owner)

    @unary()
    async def ReturnToolResult(self, request: Any, call: CallInfo) -> Any:
        session_id, owner, call_id, outcome = convert.read_return(request)
        self._check_size(self.hub.call_name(call_id), outcome[0], "result")
        await self._allow(call, "serve", session_id)
        self.hub.claim(session_id, owner, call.principal)
        return convert.return_response(self.hub.complete(session_id, owner, call_id, outcome))

    def _check_size(self, name: str, text: str, what: str) -> None:
        limit = self.limits.max_value_bytes
        if limit is not None and len(text) > limit:
            raise LimitExceededError(
                f"the {what} of a call to tool {name!r} are {len(text)} bytes of JSON, more "
                f"than the store accepts ({limit} bytes); send less",
                limit=limit,
            )

    # -- owner streams -------------------------------------------------------------------

    async def ServeTools(self, request: Any, context: Any) -> None:
        resets: list[Any] = []
        stream = None
        try:
            call, resets = enter_call(context, self.guard)
            session_id, owner, key = convert.read_serve(checked(request))
            await self._allow(call, "serve", session_id)
            self.hub.authorize(session_id, owner, call.principal, key)
            stream = self.hub.open_stream(session_id, owner)
            await context.write(convert.serve_started(owner, stream.key))
            while not self.stopping:
                try:
                    item = await asyncio.wait_for(
                        stream.queue.get(), self.limits.heartbeat_interval
                    )
                except asyncio.TimeoutError:
                    await self._allow(call, "serve", session_id)  # ends if the session did
                    await context.write(convert.serve_heartbeat(time.time()))
                    continue
                if item is None:
                    break  # replaced by a newer stream of the same owner, or shutting down
                if not item.future.done():
                    await context.write(
                        convert.serve_call(item.call_id, item.name, item.arguments_json)
                    )
            if self.stopping:
                raise StoreUnavailableError(
                    "the session store is shutting down; serve the tools again once it is back"
                )
        except DspexError as exc:
            await abort(context, exc)
        finally:  # also when the owner went away (the task is cancelled)
            reset(resets)
            if stream is not None:
                self.hub.close_stream(stream)

    def begin_shutdown(self) -> None:
        """End every ServeTools stream; the calls waiting on them fail with a clear error."""
        self.stopping = True
        self.hub.end_all()


def _wait_time(timeout: float | None, deadline: float | None) -> float | None:
    """How long CallTool waits: ``timeout``, and less than the caller's own deadline."""
    ends = [] if timeout is None else [timeout]
    if deadline is not None:
        ends.append(max(0.0, deadline - time.monotonic() - _DEADLINE_MARGIN))
    return min(ends) if ends else None


def _timed_out(pending: PendingCall, waited: float | None) -> ToolTimeoutError:
    return ToolTimeoutError(
        f"tool {pending.name!r} (owner {pending.stream.owner}) did not answer within "
        f"{waited or 0:g} s; the call may still be running in its owner; call it with a "
        "longer timeout",
        tool=pending.name,
        owner=pending.stream.owner,
    )


def add_tool_store(
    servicer: ToolStoreServicer, server: Any, observers: Sequence[CallObserver] = ()
) -> None:
    """Add every ToolStore RPC of ``servicer`` to an aio ``server`` (malformed request bytes
    are answered INVALID_ARGUMENT, as for the session store), seen by ``observers``."""
    methods = service_methods(tools_pb2, "ToolStore")
    register_service(server, convert.SERVICE_NAME, servicer, methods, observers)
