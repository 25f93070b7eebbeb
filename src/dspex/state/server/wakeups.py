"""Server side: wakes the server's asyncio watch streams when their watch has news.

Each ``WatchVariables`` stream owns an ordinary provider watch (the provider's bounded queue,
filter, replay and lag rules apply unchanged; nothing about watching is re-implemented here).
Those queues are filled by whichever thread writes, so an asyncio task cannot block on them.
The hub runs one small thread per watched session that blocks on one extra provider watch and,
after each change, wakes every stream of that session on the event loop; each stream then
drains its own queue without blocking. One ticker task wakes streams that stayed idle for a
heartbeat interval (so waiting costs no timer per stream) and re-checks the others.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Final

from dspex.errors import DspexError, WatchLaggedError
from dspex.state.core.contract import StateProvider
from dspex.state.core.limits import uncounted_watch
from dspex.state.core.watch import VariableWatch

__all__ = ["HEARTBEAT", "StreamWaiter", "StreamWakeups"]

_RECHECK: Final = 1.0
"""Seconds between safety-net re-checks of every stream's queue."""

HEARTBEAT: Final[Any] = object()
"""Result of :meth:`StreamWaiter.wait` when the stream has been idle for a heartbeat interval."""


class StreamWaiter:
    """How one stream waits for news without a timer: a future the hub resolves."""

    __slots__ = ("_future", "_loop", "last_sent")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[Any] | None = None
        self.last_sent = time.monotonic()

    def arm(self) -> None:
        """Start listening (call before draining, so news that arrives meanwhile is kept)."""
        self._future = self._loop.create_future()

    async def wait(self) -> Any:
        """Wait until woken; returns :data:`HEARTBEAT` when only the heartbeat is due."""
        future = self._future
        if future is None:
            return None
        try:
            return await future
        finally:
            self._future = None

    def wake(self, reason: Any = None) -> None:
        """Resolve the pending wait, if any."""
        future = self._future
        if future is not None and not future.done():
            future.set_result(reason)


def _pump_watch(provider: StateProvider, session_id: str) -> VariableWatch:
    """A watch of every change for a pump: internal, so it does not count as a watcher."""
    token = uncounted_watch.set(True)
    try:
        return provider.watch_variables(session_id)
    finally:
        uncounted_watch.reset(token)


class _SessionPump:
    """One thread per watched session: turns provider changes into event-loop wake-ups.

    Its provider watch is kept subscribed *after* every stream's watch (it re-subscribes when
    a stream joins). A provider delivers a change to its watchers in subscription order, so
    once the pump has the change every stream's queue has it too: no wake-up comes early.
    The hub's ticker re-checks every stream periodically as a safety net all the same.
    """

    def __init__(
        self, provider: StateProvider, session_id: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.provider = provider
        self.session_id = session_id
        self.loop = loop
        self.streams: set[StreamWaiter] = set()
        self.ended = False
        self._lock = threading.Lock()
        self._stopped = False
        self._watch: VariableWatch = _pump_watch(provider, session_id)
        self._thread = threading.Thread(
            target=self._run, name=f"dspex-watch-pump-{session_id[:12]}", daemon=True
        )
        self._thread.start()

    def resubscribe(self) -> None:
        """Move this pump's watch behind every stream's (called when a stream joins).

        Raises:
            DspexError: the session cannot be watched any more.
        """
        fresh = _pump_watch(self.provider, self.session_id)
        with self._lock:
            if self._stopped:
                fresh.cancel()
                return
            old, self._watch = self._watch, fresh
        old.cancel()  # the pump thread moves on to ``fresh``

    def stop(self) -> None:
        """End the pump thread (called on the event loop when its last stream leaves)."""
        with self._lock:
            self._stopped = True
            self._watch.cancel()

    def wake(self) -> None:
        """Wake every stream of this session (runs on the event loop)."""
        for stream in self.streams:
            stream.wake()

    def _run(self) -> None:
        try:
            while self._next_change():
                self._signal()
        finally:
            self.ended = True
            self._signal()

    def _next_change(self) -> bool:
        """Block for the next change and drain whatever else is queued; False when ended."""
        while True:
            watch = self._watch
            try:
                if watch.poll(None) is not None:
                    while watch.poll(0) is not None:
                        pass
                    return True
            except WatchLaggedError:
                return self._rewatch()  # this pump fell behind: start afresh, nothing is lost
            except DspexError:
                return False
            with self._lock:
                if self._stopped or watch is self._watch:
                    return False  # ended (session closed) rather than replaced

    def _rewatch(self) -> bool:
        with self._lock:
            if self._stopped:
                return False
            try:
                self._watch = _pump_watch(self.provider, self.session_id)
            except DspexError:
                return False
        return True

    def _signal(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.wake)
        except RuntimeError:  # the event loop is closed: the server is gone
            pass


class StreamWakeups:
    """Per-session wake-ups and idle heartbeats for the server's watch streams.

    Used only on the event loop. ``heartbeat_interval`` is the idle time after which a stream
    is woken with :data:`HEARTBEAT`.
    """

    def __init__(
        self,
        provider: StateProvider,
        loop: asyncio.AbstractEventLoop,
        heartbeat_interval: float,
    ) -> None:
        self._provider = provider
        self._loop = loop
        self._interval = heartbeat_interval
        self._pumps: dict[str, _SessionPump] = {}
        self._ticker: asyncio.Task[None] | None = None

    @property
    def stream_count(self) -> int:
        """Number of streams currently joined."""
        return sum(len(p.streams) for p in self._pumps.values())

    def join(self, session_id: str, stream: StreamWaiter) -> None:
        """Wake ``stream`` after every change to the session from now on.

        Raises:
            DspexError: the session cannot be watched (closed meanwhile ...).
        """
        pump = self._pumps.get(session_id)
        if pump is None or pump.ended:
            fresh = _SessionPump(self._provider, session_id, self._loop)
            if pump is not None:  # an ended pump (session closed and re-created): take over
                pump.stop()
                fresh.streams |= pump.streams
            pump = self._pumps[session_id] = fresh
        else:
            try:
                pump.resubscribe()
            except DspexError:  # e.g. a watcher limit: keep the old order (the ticker covers)
                pass
        pump.streams.add(stream)
        if self._ticker is None:
            self._ticker = self._loop.create_task(self._tick())

    def leave(self, session_id: str, stream: StreamWaiter) -> None:
        """Stop waking ``stream``; the session's pump ends with its last stream."""
        pump = self._pumps.get(session_id)
        if pump is None:
            return
        pump.streams.discard(stream)
        if not pump.streams:
            pump.stop()
            del self._pumps[session_id]

    async def _tick(self) -> None:
        """Wake streams idle for a heartbeat interval, and re-check the rest (safety net)."""
        while True:
            await asyncio.sleep(min(self._interval / 2, _RECHECK))
            due = time.monotonic() - self._interval
            for pump in list(self._pumps.values()):
                for stream in pump.streams:
                    stream.wake(HEARTBEAT if stream.last_sent <= due else None)

    def wake_all(self) -> None:
        """Wake every stream (the server is stopping)."""
        for pump in self._pumps.values():
            pump.wake()

    def close(self) -> None:
        """Stop every pump and the heartbeat ticker."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for pump in self._pumps.values():
            pump.stop()
        self._pumps.clear()
