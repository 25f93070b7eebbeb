"""Client side: the client's watch streams, all read by one background event loop.

A sync gRPC stream needs a thread per stream, and every message then costs two thread wake-ups
before the consumer even sees it. Instead each client owns one :class:`StreamLoop`: a daemon
thread running an asyncio loop with a ``grpc.aio`` channel, which reads every watch stream of
that client and hands each event to a callback (the callback feeds the watch's queue).

A dedicated watch stream (a resumed or initial-records watch, such as a worker's read cache
follows) is a :class:`DedicatedStream` instead: a call on a channel with
``SingleThreadedUnaryStream``, read by the one thread that needs its next message, blocked
inside gRPC on that call alone, which receives, decodes and hands over each message itself.
That is the watch's consumer while it waits for an update with no timeout (iterating the
watch), so an update wakes the one thread that uses it: not gRPC's poller thread and then the
loop thread, nor a reader thread and then the consumer. On a machine running a hundred
watchers on two cores, every wake-up per update counts.

Either way a stream never goes silent: whatever ends it, ``on_end`` is called. An exception
that is not a dspex error (a bug decoding a message, an unexpected exception from gRPC, a
consumer's callback) ends it with :class:`~dspex.errors.WatchError` carrying that exception as
``__cause__`` (a lock-holder stream: :class:`~dspex.errors.StoreError`), so the consumer
iterating or polling the watch hears of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from dspex._proto.bridge.v1 import store_pb2_grpc
from dspex.errors import DspexError, StoreError, StoreUnavailableError, WatchError
from dspex.state.client import convert
from dspex.state.wire.channel import StoreAddress, aio_channel
from dspex.state.wire.status import translate_rpc_errors
from dspex.state.wire.tls import ClientTls

__all__ = ["DedicatedStream", "HolderStream", "StreamLoop", "resumable"]

OnEvent = Callable[[str, Any], bool]
"""``on_event(kind, payload)`` for each stream message; return False to stop reading."""
OnEnd = Callable[[DspexError | None], None]
"""``on_end(error)`` once: None when the stream ended normally or was stopped."""

_EVENTS: dict[str, Callable[[Any], list[tuple[str, Any]]]] = {
    "WatchVariables": convert.watch_events,
    "HoldLocks": convert.hold_locks_events,
}


def _deliver(events: list[tuple[str, Any]], on_event: OnEvent) -> bool:
    """Hand one message's events to ``on_event`` in order; False once it says stop."""
    return all(on_event(kind, payload) for kind, payload in events)


def _broken(exc: Exception, method: str, address: str) -> DspexError:
    """The error a stream ends with when reading or handling its next message raised ``exc``,
    which is not a dspex error: the stream is ended rather than left silent. A watch ends
    with :class:`WatchError`, a lock-holder stream with :class:`StoreError`."""
    error = (WatchError if method == "WatchVariables" else StoreError)(
        f"the {method} stream from session store {address} was ended: handling its next "
        f"message failed in this process ({type(exc).__name__}: {exc}); this is a bug (or a "
        "value this process cannot decode): please report it",
        address=address,
    )
    error.__cause__ = exc
    return error


def resumable(error: DspexError, revision: int, address: str) -> DspexError:
    """``error`` as a watch's own end, saying to resume after ``revision`` (the last one it
    got), when it says nothing of where to resume: a lost connection or a broken stream.

    Other errors (those that carry ``resume_from`` already, or that no resume mends, such as
    a closed session) are returned as they are.
    """
    if "resume_from" in error.details or not isinstance(error, StoreUnavailableError | WatchError):
        return error
    resumed = type(error)(
        f"{error.message}; the watch stream was lost: watch again with after_revision={revision}",
        **{**error.details, "address": address, "resume_from": revision},
    )
    resumed.__cause__ = error.__cause__
    return resumed


class StreamLoop:
    """One event loop thread and one ``grpc.aio`` channel reading a client's watch streams."""

    def __init__(
        self, address: StoreAddress, max_message_bytes: int, tls: ClientTls | None = None
    ) -> None:
        self._address = address
        self.address = address
        self._tls = tls
        self._errors = translate_rpc_errors(address.url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="dspex-watch-streams", daemon=True
        )
        self._thread.start()
        self._channel: Any = None
        self._stub: Any = None
        self._closing = False
        self._submit(self._open_channel(max_message_bytes)).result(timeout=30)

    def _submit(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _open_channel(self, max_message_bytes: int) -> None:
        self._channel = aio_channel(self._address, max_message_bytes, self._tls)
        self._stub = store_pb2_grpc.SessionStoreStub(self._channel)

    def follow(
        self,
        request: Any,
        metadata: tuple[tuple[str, str], ...],
        on_event: OnEvent,
        on_end: OnEnd,
        *,
        method: str = "WatchVariables",
    ) -> Callable[[], None]:
        """Start reading a server stream (WatchVariables or HoldLocks); returns a function
        that stops it."""
        reading = self._read(method, request, metadata, on_event, on_end)
        try:
            if self._closing:
                raise RuntimeError("the stream loop is closing")
            task = self._submit(reading)
        except RuntimeError as exc:  # its client was closed meanwhile (a close racing this)
            reading.close()
            raise StoreUnavailableError.client_closed(self.address.url) from exc

        def stop() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(task.cancel)

        return stop

    async def _read(
        self,
        method: str,
        request: Any,
        metadata: tuple[tuple[str, str], ...],
        on_event: OnEvent,
        on_end: OnEnd,
    ) -> None:
        classify = _EVENTS[method]
        error: DspexError | None = None
        call: Any = None
        try:
            with self._errors:
                call = getattr(self._stub, method)(request, metadata=metadata or None)
                async for message in call:
                    if not _deliver(classify(message), on_event):
                        break
        except DspexError as exc:
            error = exc
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # never a silent end: the consumer hears of it
            error = _broken(exc, method, self._address.url)
        finally:
            if call is not None:
                call.cancel()
        on_end(error)

    def close(self) -> None:
        """Stop every stream, close the channel and end the thread; a stream started from
        now on is refused with ``StoreUnavailableError`` (``closed``)."""
        self._closing = True
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


class DedicatedStream:
    """One WatchVariables call, read by whichever thread needs its next message.

    A consumer blocked waiting for an update reads the call itself (:meth:`pull`): gRPC wakes
    that thread, which decodes the message and hands its events over, with no second thread to
    wake. Once asked (:meth:`read_in_background`: for a poll with a timeout, which a call
    blocked in gRPC cannot honour, or a consumer that takes delivery on the stream's thread),
    a daemon thread named ``name`` reads it instead, for good. Same contract as
    :meth:`StreamLoop.follow`: ``on_event`` per event (False stops), then ``on_end`` once (None
    when it ended normally or was stopped).

    ``call`` is a started call on a sync channel with ``SingleThreadedUnaryStream``: reading it
    blocks the reading thread inside gRPC, one thread at a time.
    """

    def __init__(
        self,
        call: Any,
        errors: translate_rpc_errors,
        on_event: OnEvent,
        on_end: OnEnd,
        *,
        name: str,
    ) -> None:
        self._call = call
        self._errors = errors
        self._on_event = on_event
        self._on_end = on_end
        self._name = name
        self._turn = threading.Condition()  # who reads: one thread at a time
        self._busy = False  # a thread is reading the call (guarded by _turn)
        self._thread: threading.Thread | None = None  # set once: it alone reads from then on
        self._over = False
        self._stopped = False

    def pull(self) -> bool:
        """Read the next message on this thread and hand its events over; False, reading
        nothing, once the stream is read in the background or is over."""
        with self._turn:
            while self._busy and self._thread is None and not self._over:
                self._turn.wait()
            if self._thread is not None or self._over:
                return False
            self._busy = True
        try:
            self._step()
        finally:
            with self._turn:
                self._busy = False
                self._turn.notify_all()
        return True

    def read_in_background(self) -> None:
        """From now on read the stream on its own daemon thread (idempotent); a consumer
        reading it now finishes its message first."""
        with self._turn:
            if self._thread is not None or self._over:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._turn.notify_all()  # consumers waiting for their turn: the queue, now
        self._thread.start()

    def stop(self) -> None:
        """Cancel the call; a thread blocked reading it returns (idempotent)."""
        self._stopped = True
        self._call.cancel()

    def _run(self) -> None:
        with self._turn:
            while self._busy:
                self._turn.wait()
            self._busy = True  # for good
        while not self._over and self._step():
            pass

    def _step(self) -> bool:
        """Read one message and hand its events over (the reading thread); False once the
        stream is over, ``on_end`` called (whatever ended it: never a silent end)."""
        error: DspexError | None = None
        try:
            with self._errors:
                if _deliver(convert.watch_events(next(self._call)), self._on_event):
                    return True
        except StopIteration:
            pass
        except DspexError as exc:
            error = exc
        except Exception as exc:
            error = _broken(exc, "WatchVariables", self._errors.address)
        self._over = True
        self._call.cancel()
        self._on_end(None if self._stopped else error)
        return False


class HolderStream:
    """A client's ``HoldLocks`` stream: while it is open, the locks it acquired stay held.

    The server names the stream with a holder id (sent with each AcquireLock) and releases the
    locks acquired under it as soon as the stream ends: when the client closes, its process
    dies or its connection breaks. ``ended`` tells the client to open a new one.
    """

    def __init__(
        self, loop: StreamLoop, metadata: tuple[tuple[str, str], ...], timeout: float
    ) -> None:
        self.holder_id: str | None = None
        self.ended = False
        self._failure: DspexError | None = None
        self._started = threading.Event()
        self._stop = loop.follow(
            convert.hold_locks_request(), metadata, self._on_event, self._on_end,
            method="HoldLocks",
        )  # fmt: skip
        if not self._started.wait(timeout):
            self.stop()
            raise StoreUnavailableError.stream_timeout(
                loop.address.url, "open a lock-holder stream", timeout
            )
        if self.holder_id is None:
            raise self._failure or StoreUnavailableError(
                "the lock-holder stream ended before it started", address=loop.address.url
            )

    def _on_event(self, kind: str, payload: Any) -> bool:
        if kind == "started":
            self.holder_id = payload
            self._started.set()
        return True

    def _on_end(self, error: DspexError | None) -> None:
        self.ended = True
        self._failure = error
        self._started.set()

    def stop(self) -> None:
        """Close the stream (the server releases the locks still held under it)."""
        self.ended = True
        self._stop()
