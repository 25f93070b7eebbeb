"""Server side: watching every call once, for metrics and traces.

:class:`CallObserver` is told when an RPC starts and how it ended (its status code);
:func:`observed` wraps each servicer method once, when the service is registered (see
:func:`~dspex.state.server.handlers.register_service`), so every observer sees every call,
unary or streaming, of the session store and the tool store without any servicer method
knowing (at less cost per call than a grpc server interceptor, and none without observers).

:class:`StoreEvents` are the few moments only a servicer can see (a lock waited on, a watch
dropped for lagging, a tool call's outcome); the servicer reports them to its ``events`` and
the base class ignores them, so a server without metrics pays nothing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

__all__ = ["CallObserver", "StoreEvents", "observed", "status_of"]


class StoreEvents:
    """What the servicer reports beyond a call's status; every hook does nothing here."""

    def lock_waited(self, seconds: float, acquired: bool) -> None:
        """A waiting ``AcquireLock`` found the lock taken and waited ``seconds`` for it."""

    def watch_lagged(self) -> None:
        """A watch stream ended because its reader fell too far behind (WatchLaggedError)."""

    def tool_called(self, tool: str, outcome: str) -> None:
        """A ``CallTool`` ended: ``outcome`` is "ok", "raised" (the tool raised) or "failed"
        (no answer: unknown tool, owner gone, timeout, refused)."""


class CallObserver(Protocol):
    """Sees each RPC start and end."""

    def begin(self, method: str, context: Any, streaming: bool) -> Any:
        """Called before the handler runs; returns a token handed back to :meth:`end`."""

    def end(self, token: Any, code: grpc.StatusCode) -> None:
        """Called once the handler finished, with the call's status code."""


def status_of(context: Any, error: BaseException | None) -> grpc.StatusCode:
    """The status a finished call ends with: what the handler set (an abort), else OK when it
    returned, CANCELLED when the caller went away, UNKNOWN for an escaped exception."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _begin_all(
    observers: Sequence[CallObserver], method: str, context: Any, streaming: bool
) -> list[Any]:
    return [observer.begin(method, context, streaming) for observer in observers]


def _end_all(
    observers: Sequence[CallObserver], tokens: list[Any], context: Any, error: BaseException | None
) -> None:
    code = status_of(context, error)
    for observer, token in zip(reversed(observers), reversed(tokens), strict=True):
        observer.end(token, code)


def _observed_unary(
    observers: Sequence[CallObserver],
    method: str,
    behavior: Callable[..., Awaitable[Any]],
    streaming: bool = False,
) -> Callable[..., Awaitable[Any]]:
    """``behavior`` observed as one awaited call (``streaming`` for stream writers)."""

    async def unary(request: Any, context: Any) -> Any:
        tokens = _begin_all(observers, method, context, streaming)
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _end_all(observers, tokens, context, error)

    return unary


def _observed_stream(
    observers: Sequence[CallObserver], method: str, behavior: Callable[..., Any]
) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
            tokens = _begin_all(observers, method, context, True)
            error: BaseException | None = None
            try:
                async for message in behavior(request, context):
                    yield message
            except BaseException as exc:
                error = exc
                raise
            finally:
                _end_all(observers, tokens, context, error)

        return generator

    return _observed_unary(observers, method, behavior, True)  # writes with context.write


def observed(
    observers: Sequence[CallObserver], method: str, behavior: Callable[..., Any], streaming: bool
) -> Callable[..., Any]:
    """``behavior`` (a handler of RPC ``method``, ``/package.Service/Method``) with every
    observer told when each call starts and how it ends; ``behavior`` itself without any."""
    if not observers:
        return behavior
    if streaming:
        return _observed_stream(tuple(observers), method, behavior)
    return _observed_unary(tuple(observers), method, behavior)
