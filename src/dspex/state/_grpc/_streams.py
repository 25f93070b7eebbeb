"""Layer 2, gRPC adapter: the client's watch streams, all read by one background event loop.

A sync gRPC stream needs a thread per stream, and every message then costs two thread wake-ups
before the consumer even sees it. Instead each client owns one :class:`StreamLoop`: a daemon
thread running an asyncio loop with a ``grpc.aio`` channel, which reads every watch stream of
that client and hands each event to a callback (the callback feeds the watch's queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import grpc

from dspex._proto.bridge.v1 import store_pb2_grpc
from dspex.errors import DspexError
from dspex.state._grpc._channel import StoreAddress, client_options
from dspex.state._grpc._convert import client as convert
from dspex.state._grpc._status import translate_rpc_errors

__all__ = ["StreamLoop"]

OnEvent = Callable[[str, Any], bool]
"""``on_event(kind, payload)`` for each stream message; return False to stop reading."""
OnEnd = Callable[[DspexError | None], None]
"""``on_end(error)`` once: None when the stream ended normally or was stopped."""


class StreamLoop:
    """One event loop thread and one ``grpc.aio`` channel reading a client's watch streams."""

    def __init__(self, address: StoreAddress, max_message_bytes: int) -> None:
        self._address = address
        self._errors = translate_rpc_errors(address.url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="dspex-watch-streams", daemon=True
        )
        self._thread.start()
        self._channel: Any = None
        self._stub: Any = None
        self._submit(self._open_channel(max_message_bytes)).result(timeout=30)

    def _submit(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _open_channel(self, max_message_bytes: int) -> None:
        self._channel = grpc.aio.insecure_channel(
            self._address.target, options=client_options(max_message_bytes)
        )
        self._stub = store_pb2_grpc.SessionStoreStub(self._channel)

    def follow(
        self, request: Any, metadata: tuple[tuple[str, str], ...], on_event: OnEvent, on_end: OnEnd
    ) -> Callable[[], None]:
        """Start reading a WatchVariables stream; returns a function that stops it."""
        task = self._submit(self._read(request, metadata, on_event, on_end))

        def stop() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(task.cancel)

        return stop

    async def _read(
        self, request: Any, metadata: tuple[tuple[str, str], ...], on_event: OnEvent, on_end: OnEnd
    ) -> None:
        call = self._stub.WatchVariables(request, metadata=metadata or None)
        error: DspexError | None = None
        try:
            with self._errors:
                async for message in call:
                    if not on_event(*convert.watch_event(message)):
                        break
        except DspexError as exc:
            error = exc
        except asyncio.CancelledError:
            pass
        finally:
            call.cancel()
        on_end(error)

    def close(self) -> None:
        """Stop every stream, close the channel and end the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._submit(self._shutdown()).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
