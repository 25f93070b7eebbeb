"""Server side: what every store call does before and after its servicer method.

One place for the call prologue and epilogue: read the call metadata once (bearer token,
writer, lock-owner token, lock holder), authenticate the caller, set the identity ContextVars
the provider's semantics read (``current_principal``, ``current_writer``,
``current_lock_owner``), run the servicer method (in a worker thread when the provider may
block the event loop), and end any failure with its status from the one error table.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Final, Protocol

from dspex.errors import DspexError, StoreProtocolError
from dspex.state.core.identity import current_lock_owner, current_principal, current_writer
from dspex.state.engines import write_deadline
from dspex.state.server.guard import AUTHORIZATION_KEY, AccessGuard
from dspex.state.server.handlers import Malformed
from dspex.state.wire.channel import HOLDER_KEY, LOCK_OWNER_KEY, WRITER_KEY
from dspex.state.wire.status import abort, internal_error

__all__ = ["CallInfo", "CallRunner", "checked", "enter_call", "unary"]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who makes a call and under which lock holder, as the servicer method sees it.

    Attributes:
        principal: the authenticated principal ("" without access control).
        holder: the ``dspex-lock-holder`` metadata (AcquireLock), if any.
        deadline: ``time.monotonic()`` by which the caller stops waiting (None: no deadline).
    """

    principal: str = ""
    holder: str | None = None
    deadline: float | None = None


_ANONYMOUS: Final = CallInfo()
"""The CallInfo of every read without access control (immutable, so shared)."""


class CallRunner(Protocol):
    """What :func:`unary` needs from the servicer."""

    guard: AccessGuard | None
    offload: bool
    executor: Executor


_Resets = list[tuple[ContextVar[Any], Token[Any]]]


def checked(request: Any) -> Any:
    """The request, unless its bytes could not be parsed.

    Raises:
        StoreProtocolError: the request is malformed.
    """
    if isinstance(request, Malformed):
        raise StoreProtocolError(f"malformed request: {request.reason}")
    return request


def enter_call(
    context: Any, guard: AccessGuard | None, *, writes: bool = False
) -> tuple[CallInfo, _Resets]:
    """Authenticate the call and set the identity ContextVars; returns what to reset after.

    Raises:
        UnauthenticatedError: access control is on and the call has no known bearer token.
    """
    if guard is None and not writes:
        return _ANONYMOUS, []
    authorization = writer = owner = holder = None
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION_KEY:
            authorization = value
        elif key == WRITER_KEY:
            writer = value
        elif key == LOCK_OWNER_KEY:
            owner = value or None
        elif key == HOLDER_KEY:
            holder = value
    resets: _Resets = []
    principal = ""
    if guard is not None:
        principal = guard.authenticate(authorization)
        resets.append((current_principal, current_principal.set(principal)))
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    if writes:
        who = str(writer) if writer else str(context.peer())
        who = f"{principal}@{who}" if principal else who  # the store vouches for the principal
        resets.append((current_writer, current_writer.set(who)))
        resets.append((current_lock_owner, current_lock_owner.set(owner)))
        resets.append((write_deadline, write_deadline.set(deadline)))
    return CallInfo(principal, holder, deadline), resets


def reset(resets: _Resets) -> None:
    """Undo :func:`enter_call`'s ContextVar changes (in reverse order)."""
    for var, token in reversed(resets):
        var.reset(token)


async def run_sync(runner: CallRunner, function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function(*args)``: inline, or in the executor when the provider may block.

    The ContextVars (principal, writer, lock owner) travel into the worker thread.
    """
    if not runner.offload:
        return function(*args)
    loop = asyncio.get_running_loop()
    bound = functools.partial(contextvars.copy_context().run, function, *args)
    return await loop.run_in_executor(runner.executor, bound)


_Method = Callable[[Any, Any, CallInfo], Any]
_Handler = Callable[[Any, Any, Any], Awaitable[Any]]


def unary(*, writes: bool = False) -> Callable[[_Method], _Handler]:
    """Turn a servicer method ``(self, request, call)`` into an aio unary handler.

    The method may be sync (run inline or in the executor, see :func:`run_sync`) or async.
    Any error ends the call with its status; nothing escapes as a bare exception.
    """

    def decorate(method: _Method) -> _Handler:
        is_async = inspect.iscoroutinefunction(method)

        @functools.wraps(method)
        async def handler(self: CallRunner, request: Any, context: Any) -> Any:
            resets: _Resets = []
            try:
                call, resets = enter_call(context, self.guard, writes=writes)
                request = checked(request)
                if is_async:
                    return await method(self, request, call)
                return await run_sync(self, method, self, request, call)
            except DspexError as exc:
                await abort(context, exc)
            except Exception as exc:
                await abort(context, internal_error(exc))
            finally:
                reset(resets)

        return handler

    return decorate
