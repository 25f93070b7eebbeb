"""Server side: wakes the server's asyncio watch streams when their session's feed has news.

Every ``WatchVariables`` stream of a session reads the session's one shared
:class:`~dspex.state.server.feed.SessionFeed`. Its pump thread calls back after each append;
the hub then queues a turn for each stream waiting for news. Streams send a few messages per
turn and queue again while they have more to send (:class:`Turns`), with at most :data:`SLICE`
writes in flight per session, so a set that arrives during a fan-out is served at once rather
than after every stream's write. One ticker task wakes streams that stayed idle for a
heartbeat interval (so waiting costs no timer per stream).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Final

from dspex.state.core.contract import StateProvider
from dspex.state.server.feed import SessionFeed

__all__ = ["HEARTBEAT", "SLICE", "StreamWaiter", "StreamWakeups"]

_TICK: Final = 1.0
"""Most seconds between checks for streams due a heartbeat."""
SLICE: Final = 16
"""Most stream writes in flight at once per session during a fan-out."""
SLOW: Final = 0.05
"""Seconds after which a stream's write in flight stops counting against :data:`SLICE`."""
_FEED_SIZE: Final = 1024
"""Changes a session's feed keeps when the provider names no ``watch_queue_size``."""

HEARTBEAT: Final[Any] = object()
"""Result of :meth:`StreamWaiter.wait` when the stream has been idle for a heartbeat interval."""


class StreamWaiter:
    """How one stream waits for its turn or for news without a timer: a future the hub
    resolves. ``idle``: the stream has sent everything and waits for news (not for a turn)."""

    __slots__ = ("_future", "_loop", "idle", "last_sent")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[Any] | None = None
        self.idle = False
        self.last_sent = time.monotonic()

    async def wait(self, *, idle: bool) -> Any:
        """Wait until woken (for news when ``idle``, else for a turn); returns
        :data:`HEARTBEAT` when only the heartbeat is due."""
        self._future = self._loop.create_future()
        self.idle = idle
        try:
            return await self._future
        finally:
            self._future = None
            self.idle = False

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (a stream holding its news), or less when woken: the server is
        stopping. News does not wake a pause (the stream is neither idle nor queued)."""
        timer = self._loop.call_later(seconds, self.wake)
        try:
            await self.wait(idle=False)
        finally:
            timer.cancel()

    def wake(self, reason: Any = None) -> bool:
        """Resolve the pending wait, if any; False if the stream was not waiting."""
        future = self._future
        if future is None or future.done():
            return False
        future.set_result(reason)
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Turns:
    """Who sends next among one session's streams: at most :data:`SLICE` stream writes are in
    flight at once.

    Each write's completion comes back through gRPC's completion queue, which also carries the
    server's new calls; bounding the writes in flight keeps that queue short, so a set that
    arrives during a fan-out is read and answered at once instead of after the whole fan-out.
    A stream whose write does not complete within :data:`SLOW` seconds (its client is not
    reading) stops counting, so it holds no one up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: deque[StreamWaiter] = deque()
        self._active: dict[StreamWaiter, float] = {}
        self._freed: asyncio.Future[None] | None = None
        self._giving: asyncio.Task[None] | None = None  # held: the loop keeps tasks weakly

    def queue(self, stream: StreamWaiter) -> None:
        """Give ``stream`` a turn after those already waiting."""
        self._waiting.append(stream)
        if self._giving is None:
            self._giving = self._loop.create_task(self._give())

    def done(self, stream: StreamWaiter) -> None:
        """``stream``'s turn is over (it sent, went idle or left)."""
        if self._active.pop(stream, None) is not None and self._freed is not None:
            _resolve(self._freed)

    async def _give(self) -> None:
        waiting, active = self._waiting, self._active
        try:
            while waiting:
                while waiting and len(active) < SLICE:
                    stream = waiting.popleft()
                    if stream.wake():
                        active[stream] = self._loop.time()
                if waiting:
                    await self._slot()
        finally:
            self._giving = None

    async def _slot(self) -> None:
        """Wait until a turn ends, or stop counting the streams slower than :data:`SLOW`."""
        freed = self._freed = self._loop.create_future()
        timer = self._loop.call_later(SLOW, _resolve, freed)
        try:
            await freed
        finally:
            timer.cancel()
            self._freed = None
        if len(self._active) >= SLICE:
            stale = self._loop.time() - SLOW
            for stream in [s for s, started in self._active.items() if started <= stale]:
                del self._active[stream]


class StreamWakeups:
    """Per-session feeds, sliced wake-ups and idle heartbeats for the server's watch streams.

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
        self._feeds: dict[str, SessionFeed] = {}
        self._turns: dict[SessionFeed, Turns] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._size = int(getattr(provider, "watch_queue_size", 0) or _FEED_SIZE)

    @property
    def stream_count(self) -> int:
        """Number of streams currently joined."""
        return sum(len(f.streams) for f in self._feeds.values())

    def join(self, session_id: str, stream: StreamWaiter) -> SessionFeed:
        """The session's feed, ``stream`` woken after every change to it from now on.

        Raises:
            LimitExceededError: the session already has the provider's ``max_watchers``.
            DspexError: the session cannot be watched (closed meanwhile ...).
        """
        feed = self._feeds.get(session_id)
        self._check_limit(0 if feed is None else len(feed.streams))
        if feed is None or feed.ended:
            feed = self._feeds[session_id] = SessionFeed(
                self._provider, session_id, self._size, self._news_from_thread
            )  # an ended feed (session closed and re-created) keeps its streams to the end
        feed.streams.add(stream)
        if self._ticker is None:
            self._ticker = self._loop.create_task(self._tick())
        return feed

    def _check_limit(self, streams: int) -> None:
        """Apply the provider's watcher limit to this server's streams of one session."""
        check = getattr(getattr(self._provider, "limits", None), "check_watchers", None)
        if check is not None:
            check(streams)

    def leave(self, feed: SessionFeed, stream: StreamWaiter) -> None:
        """Stop waking ``stream``; a feed ends with its last stream."""
        feed.streams.discard(stream)
        self._turns_of(feed).done(stream)
        if not feed.streams:
            feed.stop()
            self._turns.pop(feed, None)
            if self._feeds.get(feed.session_id) is feed:
                del self._feeds[feed.session_id]

    def _news_from_thread(self, feed: SessionFeed) -> None:
        try:
            self._loop.call_soon_threadsafe(self._news, feed)
        except RuntimeError:  # the event loop is closed: the server is gone
            pass

    def _news(self, feed: SessionFeed) -> None:
        """Queue a turn for every stream of the feed that waits for news."""
        if not feed.streams:
            return  # the feed ended with its last stream
        turns = self._turns_of(feed)
        for stream in feed.streams:
            if stream.idle:
                stream.idle = False
                turns.queue(stream)

    async def turn(self, feed: SessionFeed, stream: StreamWaiter) -> None:
        """Wait for ``stream``'s next turn to send (after it sent what it had)."""
        turns = self._turns_of(feed)
        turns.done(stream)
        turns.queue(stream)
        await stream.wait(idle=False)

    async def idle(self, feed: SessionFeed, stream: StreamWaiter) -> Any:
        """Wait for news (``stream`` has sent everything); :data:`HEARTBEAT` if one is due."""
        self._turns_of(feed).done(stream)
        return await stream.wait(idle=True)

    def _turns_of(self, feed: SessionFeed) -> Turns:
        turns = self._turns.get(feed)
        if turns is None:
            turns = self._turns[feed] = Turns(self._loop)
        return turns

    async def _tick(self) -> None:
        """Wake the streams idle for a heartbeat interval (news wakes the others: a feed
        appends before it tells, so no wake-up comes early and none needs re-checking)."""
        while True:
            await asyncio.sleep(min(self._interval / 2, _TICK))
            due = time.monotonic() - self._interval
            for feed in list(self._feeds.values()):
                for stream in list(feed.streams):
                    if stream.idle and stream.last_sent <= due:
                        stream.wake(HEARTBEAT)

    def wake_all(self) -> None:
        """Wake every stream (the server is stopping)."""
        for feed in self._feeds.values():
            for stream in feed.streams:
                stream.wake()

    def close(self) -> None:
        """Stop every feed and the heartbeat ticker."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for feed in self._feeds.values():
            feed.stop()
        self._feeds.clear()
