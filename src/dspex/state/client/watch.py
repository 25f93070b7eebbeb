"""Client side: one WatchVariables stream, fed into an ordinary watch queue.

The stream is read on its own thread (see :func:`dspex.state.client.streams.follow_on_thread`);
each update goes into the same bounded queue, with the same lag rule, as a local watch, so a
watch over the store behaves like a local one, or, once a consumer took delivery
(:meth:`VariableWatch.deliver_to`), straight to that consumer on the reading thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from dspex._model import VariableUpdate
from dspex.errors import DspexError, StoreUnavailableError
from dspex.state.core.fanout import Watcher
from dspex.state.core.watch import END, VariableWatch

__all__ = ["StoreWatchReader"]

_DEFAULT_QUEUE = 1024


Follow = Callable[[Any, Callable[[str, Any], bool], Callable[[DspexError | None], None]], Any]
"""``follow(request, on_event, on_end)`` starts reading the stream; returns its stop function."""


class StoreWatchReader:
    """Feeds one WatchVariables stream into a watch queue (or a consumer that took delivery).

    Args:
        follow: starts reading the stream (the client's :func:`follow_on_thread`).
        address: the store's address (for errors).
        metadata: the call metadata (the bearer token).
        forget: called with this reader once it ended, so the client stops tracking it.
    """

    def __init__(
        self, follow: Follow, address: str, forget: Callable[[StoreWatchReader], None]
    ) -> None:
        self._follow = follow
        self.address = address
        self._forget = forget
        self._started = threading.Event()
        self._failure: DspexError | None = None
        self._cancelled = False
        self._watcher: Watcher | None = None
        self._backlog = 0
        self._stop: Any = None
        self._lock = threading.Lock()  # orders diverting against the stream's deliveries
        self._apply: Callable[[VariableUpdate], None] | None = None

    def start(self, request: Any, timeout: float) -> VariableWatch:
        """Return the watch once the store confirmed it is registered.

        Raises:
            DspexError: the store refused the watch (unknown session, resume too old ...).
            StoreUnavailableError: no confirmation within ``timeout`` seconds.
        """
        self._stop = self._follow(request, self._handle, self._end)
        if not self._started.wait(timeout):
            self.cancel()
            raise StoreUnavailableError.stream_timeout(self.address, "confirm the watch", timeout)
        if self._failure is not None or self._watcher is None:
            raise self._failure or StoreUnavailableError("watch stream ended before it started")
        watcher = self._watcher
        return VariableWatch(watcher.items, self.cancel, watcher.last_put, self._divert)

    def _divert(self, apply: Callable[[VariableUpdate], None]) -> bool:
        """From now on call ``apply`` with each update on the stream loop (see
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
                if isinstance(item, VariableUpdate):
                    apply(item)
                else:
                    ends.append(item)  # END or an error: nothing follows it
            for item in ends:
                watcher.items.put(item)
            if not ends:
                self._apply = apply
        return True

    def cancel(self) -> None:
        """Stop reading and cancel the call (idempotent)."""
        self._cancelled = True
        if self._stop is not None:
            self._stop()
        self._forget(self)

    def _handle(self, kind: str, payload: Any) -> bool:
        """Apply one stream event (on the stream loop); False to stop reading."""
        watcher = self._watcher
        if kind == "update" and watcher is not None:
            with self._lock:
                if self._apply is not None:  # diverted: straight to the consumer
                    self._apply(payload)
                    watcher.last_put = max(watcher.last_put, payload.revision)
                    return True
                return self._queue(watcher, payload)
        if kind == "started":
            revision, _head, queue_size, self._backlog = payload
            self._watcher = watcher = Watcher(frozenset(), queue_size or _DEFAULT_QUEUE)
            watcher.last_put = revision
            if not self._backlog:
                watcher.go_live()
            self._started.set()
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
        """The stream is over (on the stream loop): queue how it ended."""
        try:
            if error is not None:
                self._fail(error)
            elif self._watcher is not None and not self._cancelled:
                self._watcher.items.put(END)  # the session was closed: a normal end
        finally:
            self._started.set()
            self._forget(self)

    def _fail(self, exc: DspexError) -> None:
        if self._cancelled:
            return
        watcher = self._watcher
        if watcher is None:
            self._failure = exc
            return
        if isinstance(exc, StoreUnavailableError) and "resume_from" not in exc.details:
            exc = StoreUnavailableError(
                f"{exc.message}; the watch stream was lost: watch again with "
                f"after_revision={watcher.last_put}",
                address=self.address,
                resume_from=watcher.last_put,
            )
        watcher.items.put(exc)
