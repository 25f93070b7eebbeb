"""Server side: wakes the server's asyncio watch streams when their session's feed has news.

Every ``WatchVariables`` stream of a session reads the session's one shared
:class:`~dspex.state.server.feed.SessionFeed`. Its pump thread calls back after each append;
the hub then wakes the session's streams on the event loop in slices of :data:`SLICE`, yielding
to the loop between slices, so a unary call (a set) that arrives meanwhile waits for at most
one slice of stream writes, never for the whole fan-out. One ticker task wakes streams that
stayed idle for a heartbeat interval (so waiting costs no timer per stream).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from dspex.state.core.contract import StateProvider
from dspex.state.server.feed import SessionFeed

__all__ = ["HEARTBEAT", "SLICE", "StreamWaiter", "StreamWakeups"]

_TICK: Final = 1.0
"""Most seconds between checks for streams due a heartbeat."""
SLICE: Final = 16
"""Streams woken per event-loop turn during a fan-out."""
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

    def wake(self, reason: Any = None) -> None:
        """Resolve the pending wait, if any."""
        future = self._future
        if future is not None and not future.done():
            future.set_result(reason)


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
        if not feed.streams:
            feed.stop()
            if self._feeds.get(feed.session_id) is feed:
                del self._feeds[feed.session_id]

    def _news_from_thread(self, feed: SessionFeed) -> None:
        try:
            self._loop.call_soon_threadsafe(self._news, feed)
        except RuntimeError:  # the event loop is closed: the server is gone
            pass

    def _news(self, feed: SessionFeed) -> None:
        """Queue a turn for every stream of the feed that waits for news."""
        for stream in feed.streams:
            if stream.idle:
                stream.idle = False
                feed.turns.append(stream)
        self._run_turns(feed)

    async def turn(self, feed: SessionFeed, stream: StreamWaiter) -> None:
        """Wait for ``stream``'s next turn to send (after it sent what it had)."""
        feed.turns.append(stream)
        self._run_turns(feed)
        await stream.wait(idle=False)

    def _run_turns(self, feed: SessionFeed) -> None:
        if feed.turns and not feed.fanning:
            feed.fanning = True
            self._loop.create_task(self._fan_out(feed))

    async def _fan_out(self, feed: SessionFeed) -> None:
        """Give queued streams their turns, :data:`SLICE` per event-loop turn: a unary call
        (a set) that arrives meanwhile waits for one slice of stream writes, not the fan-out."""
        turns = feed.turns
        try:
            while turns:
                for _ in range(min(SLICE, len(turns))):
                    turns.popleft().wake()
                await asyncio.sleep(0)
        finally:
            feed.fanning = False

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
