"""Server side: watching every call once, for metrics and traces.

:class:`CallObserver` is told when an RPC starts and how it ended (its status code); the
:class:`ObservingInterceptor` wraps each method handler of the server once (cached per method)
so every observer sees every call, unary or streaming, of every service (the session store,
the tool store, health, reflection), without any servicer method knowing. :class:`StoreEvents`
are the few moments only a servicer can see (a lock waited on, a watch dropped for lagging, a
tool call's outcome); the servicer reports them to its ``events`` and the base class ignores
them, so a server without metrics pays nothing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

__all__ = ["CallObserver", "ObservingInterceptor", "StoreEvents", "status_of"]


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
    observers: Sequence[CallObserver], method: str, behavior: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def unary(request: Any, context: Any) -> Any:
        tokens = _begin_all(observers, method, context, False)
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

    async def writer(request: Any, context: Any) -> Any:  # writes with context.write
        tokens = _begin_all(observers, method, context, True)
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _end_all(observers, tokens, context, error)

    return writer


class ObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every unary-unary and unary-stream handler so ``observers`` see each call.

    Client-streaming methods (none in dspex's services) pass through unobserved.
    """

    def __init__(self, observers: Sequence[CallObserver]) -> None:
        self._observers = tuple(observers)
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        options = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            behavior = _observed_unary(self._observers, method, handler.unary_unary)
            return grpc.unary_unary_rpc_method_handler(behavior, **options)
        if handler.unary_stream is not None:
            behavior = _observed_stream(self._observers, method, handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(behavior, **options)
        return handler
