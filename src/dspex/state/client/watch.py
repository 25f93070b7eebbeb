"""Client side: one dedicated WatchVariables stream, fed into an ordinary watch queue.

The stream is a :class:`~dspex.state.client.streams.DedicatedStream`: read by the watch's
consumer itself while it waits for an update with no timeout (iterating the watch), else by a
thread of its own. Each update goes into the same bounded queue, with the same lag rule, as a
local watch, so a watch over the store behaves like a local one; or, once a consumer took
delivery (:meth:`VariableWatch.deliver_to`), straight to that consumer on the reading thread.
If the consumer's callback raises, the watch ends with :class:`~dspex.errors.WatchError`
(queued, so iteration and ``poll`` raise it): skipping the update would be a silent gap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from dspex._model import VariableUpdate
from dspex.errors import DspexError, StoreUnavailableError, WatchError
from dspex.state.client.streams import DedicatedStream, OnEnd, OnEvent, resumable
from dspex.state.core.fanout import Watcher
from dspex.state.core.watch import END, VariableWatch

__all__ = ["StoreWatchReader"]

_DEFAULT_QUEUE = 1024


Open = Callable[[Any, OnEvent, OnEnd], DedicatedStream]
"""``open(request, on_event, on_end)`` starts the call; returns its (unread) stream."""


class StoreWatchReader:
    """Feeds one WatchVariables stream into a watch queue (or a consumer that took delivery).

    Args:
        open_stream: starts the call (the client's ``_open_dedicated``).
        address: the store's address (for errors).
        forget: called with this reader once it ended, so the client stops tracking it.
    """

    def __init__(
        self, open_stream: Open, address: str, forget: Callable[[StoreWatchReader], None]
    ) -> None:
        self._open = open_stream
        self.address = address
        self._forget = forget
        self._failure: DspexError | None = None
        self._cancelled = False
        self._closed = False  # the client closed: a watch starting meanwhile is refused
        self._watcher: Watcher | None = None
        self._backlog = 0
        self._stream: DedicatedStream | None = None
        self._lock = threading.Lock()  # orders diverting against the stream's deliveries
        self._apply: Callable[[VariableUpdate], None] | None = None

    def start(self, request: Any, timeout: float) -> VariableWatch:
        """Return the watch once the store confirmed it is registered (its first message,
        read on this thread).

        Raises:
            DspexError: the store refused the watch (unknown session, resume too old ...).
            StoreUnavailableError: no confirmation within ``timeout`` seconds.
        """
        if self._closed:  # closed since the client registered this reader
            raise StoreUnavailableError.client_closed(self.address, " while this watch started")
        self._stream = stream = self._open(request, self._handle, self._end)
        if self._closed:  # closed while it opened: close() saw no stream to stop
            stream.stop()
            raise StoreUnavailableError.client_closed(self.address, " while this watch started")
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            stream.stop()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            while self._watcher is None and stream.pull():
                pass
        finally:
            timer.cancel()
        if expired.is_set():
            self.cancel()
            raise StoreUnavailableError.stream_timeout(self.address, "confirm the watch", timeout)
        if self._closed:  # even if it was confirmed meanwhile: its stream is stopped
            raise StoreUnavailableError.client_closed(self.address, " while this watch started")
        if self._failure is not None or self._watcher is None:
            raise self._failure or StoreUnavailableError(
                f"the watch stream of session store {self.address} ended before it started",
                address=self.address,
            )
        watcher = self._watcher
        return VariableWatch(
            watcher.items, self.cancel, watcher.last_put, self._divert, self._pull
        )

    def _pull(self, timeout: float | None) -> bool:
        """Read the stream's next message on the consumer's thread, which waits with no
        ``timeout``; with one, have the stream read on its own thread from now on (a thread
        blocked in gRPC cannot give up after a timeout). False when updates come only
        through the queue."""
        stream = self._stream
        if stream is None:
            return False
        if timeout is None:
            return stream.pull()
        stream.read_in_background()
        return False

    def _divert(self, apply: Callable[[VariableUpdate], None]) -> bool:
        """From now on call ``apply`` with each update on the stream's own thread (see
        :meth:`VariableWatch.deliver_to`); what is queued already is applied first."""
        watcher = self._watcher
        if watcher is None:
            return False
        with self._lock:
            ends: list[Any] = []
            while True:
                try:
                    item = watcher.items.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(item, VariableUpdate):
                    ends.append(item)  # END or an error: nothing follows it
                elif not ends and not self._hand_over(apply, watcher, item):
                    ends.append(None)  # the callback failed: the watch ended, drop the rest
            for item in ends:
                if item is not None:
                    watcher.items.put(item)
            if not ends:
                self._apply = apply
        if self._stream is not None:
            self._stream.read_in_background()  # the consumer no longer reads it
        return True

    def _hand_over(
        self, apply: Callable[[VariableUpdate], None], watcher: Watcher, update: VariableUpdate
    ) -> bool:
        """Call the consumer's ``apply`` with ``update``; False, the watch ended with a
        :class:`WatchError` and its call cancelled, if it raised."""
        try:
            apply(update)
        except Exception as exc:
            self._cancelled = True  # what ends the call now adds nothing after the error
            watcher.items.put(self._callback_failed(update, exc))
            if self._stream is not None:
                self._stream.stop()
            return False
        watcher.last_put = max(watcher.last_put, update.revision)
        return True

    def _callback_failed(self, update: VariableUpdate, exc: Exception) -> WatchError:
        """The error ending the watch when the deliver_to callback raised ``exc`` on
        ``update``: resume just before it (an initial record: read them all again)."""
        details: dict[str, Any] = {}
        if update.kind == "initial":
            again = "watch again with include_initial=True"
        else:
            details["resume_from"] = resume = update.revision - 1
            again = f"watch again with after_revision={resume} (that update comes again)"
        error = WatchError(
            f"the watch of session store {self.address} was ended: the deliver_to callback "
            f"raised {type(exc).__name__} on the update of {update.name!r} at revision "
            f"{update.revision} ({exc}); fix the callback, then {again}",
            address=self.address,
            **details,
        )
        error.__cause__ = exc
        return error

    def close(self) -> None:
        """The client is closing: the watch ends normally, as a watch of a closing local
        provider does (iteration stops, ``poll`` returns None), and the call is cancelled.

        END is queued here, not left to the reading thread: a watch nobody reads, or read
        only by its consumer, would otherwise wait for a message that never comes.
        """
        with self._lock:
            self._closed = True
            watcher = self._watcher
        if watcher is not None and not self._cancelled:
            watcher.end(END)
        self.cancel()

    def cancel(self) -> None:
        """Stop reading and cancel the call (idempotent)."""
        self._cancelled = True
        if self._stream is not None:
            self._stream.stop()
        self._forget(self)

    def _handle(self, kind: str, payload: Any) -> bool:
        """Apply one stream event (on the reading thread); False to stop reading."""
        watcher = self._watcher
        if kind == "update" and watcher is not None:
            with self._lock:
                if self._apply is not None:  # diverted: straight to the consumer
                    return self._hand_over(self._apply, watcher, payload)
                return self._queue(watcher, payload)
        if kind == "started":
            revision, _head, queue_size, self._backlog = payload
            watcher = Watcher(frozenset(), queue_size or _DEFAULT_QUEUE)
            watcher.last_put = revision
            if not self._backlog:
                watcher.go_live()
            self._watcher = watcher
        return True

    def _queue(self, watcher: Watcher, update: VariableUpdate) -> bool:
        """Queue one update for the watch's consumer; False once the queue overflowed."""
        if self._backlog:  # initial records and replayed changes: not held against the bound
            watcher.preload((update,))
            self._backlog -= 1
            if not self._backlog:
                watcher.go_live()
            return True
        watcher.offer(update)
        if watcher.lagged:  # this process fell behind: the error is queued; stop the call
            self._cancelled = True
            return False
        return True

    def _end(self, error: DspexError | None) -> None:
        """The stream is over (on the reading thread): queue how it ended."""
        try:
            if error is not None:
                self._fail(error)
            elif self._watcher is not None and not self._cancelled:
                self._watcher.items.put(END)  # the session was closed: a normal end
        finally:
            self._forget(self)

    def _fail(self, exc: DspexError) -> None:
        if self._cancelled:
            return
        watcher = self._watcher
        if watcher is None:
            self._failure = exc
            return
        watcher.items.put(resumable(exc, watcher.last_put, self.address))
