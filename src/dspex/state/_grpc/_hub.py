"""Layer 2, gRPC adapter: wakes the server's asyncio watch streams when their watch has news.

Each ``WatchVariables`` stream owns an ordinary provider watch (the provider's bounded queue,
filter, replay and lag rules apply unchanged; nothing about watching is re-implemented here).
Those queues are filled by whichever thread writes, so an asyncio task cannot block on them.
The hub runs one small thread per watched session that blocks on one extra provider watch and,
after each change, wakes every stream of that session on the event loop; each stream then
drains its own queue without blocking.
"""

from __future__ import annotations

import asyncio
import threading

from dspex.errors import DspexError, WatchLaggedError
from dspex.state._provider import StateProvider
from dspex.state._watch import VariableWatch

__all__ = ["WatchHub"]


class _SessionPump:
    """One thread per watched session: turns provider changes into event-loop wake-ups."""

    def __init__(
        self, provider: StateProvider, session_id: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.provider = provider
        self.session_id = session_id
        self.loop = loop
        self.events: set[asyncio.Event] = set()
        self.ended = False
        self._lock = threading.Lock()
        self._stopped = False
        self._watch: VariableWatch = provider.watch_variables(session_id)
        self._thread = threading.Thread(
            target=self._run, name=f"dspex-watch-pump-{session_id[:12]}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the pump thread (called on the event loop when its last stream leaves)."""
        with self._lock:
            self._stopped = True
            self._watch.cancel()

    def wake(self) -> None:
        """Wake every stream of this session (runs on the event loop)."""
        for event in self.events:
            event.set()

    def _run(self) -> None:
        try:
            while self._next_change():
                self._barrier()
                self._signal()
        finally:
            self.ended = True
            self._signal()

    def _next_change(self) -> bool:
        """Block for the next change and drain whatever else is queued; False when ended."""
        try:
            if self._watch.poll(None) is None:
                return False
            while self._watch.poll(0) is not None:
                pass
            return not self._watch.closed
        except WatchLaggedError:
            return self._rewatch()  # this pump fell behind: start afresh, nothing is lost
        except DspexError:
            return False

    def _rewatch(self) -> bool:
        with self._lock:
            if self._stopped:
                return False
            try:
                self._watch = self.provider.watch_variables(self.session_id)
            except DspexError:
                return False
        return True

    def _barrier(self) -> None:
        # The provider offers a change to every watcher while holding the session lock; this
        # pump's watcher may come first. A read that takes the same lock returns only after the
        # writer has offered the change to every stream's queue, so no wake-up comes too early.
        try:
            self.provider.get_variables(self.session_id, ())
        except DspexError:
            pass

    def _signal(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.wake)
        except RuntimeError:  # the event loop is closed: the server is gone
            pass


class WatchHub:
    """Per-session wake-ups for the server's watch streams; used only on the event loop."""

    def __init__(self, provider: StateProvider, loop: asyncio.AbstractEventLoop) -> None:
        self._provider = provider
        self._loop = loop
        self._pumps: dict[str, _SessionPump] = {}

    @property
    def stream_count(self) -> int:
        """Number of streams currently joined."""
        return sum(len(p.events) for p in self._pumps.values())

    def join(self, session_id: str, event: asyncio.Event) -> None:
        """Wake ``event`` after every change to the session from now on.

        Raises:
            DspexError: the session cannot be watched (closed meanwhile ...).
        """
        pump = self._pumps.get(session_id)
        if pump is None or pump.ended:
            fresh = _SessionPump(self._provider, session_id, self._loop)
            if pump is not None:  # an ended pump (session closed and re-created): take over
                pump.stop()
                fresh.events |= pump.events
            pump = self._pumps[session_id] = fresh
        pump.events.add(event)

    def leave(self, session_id: str, event: asyncio.Event) -> None:
        """Stop waking ``event``; the session's pump ends with its last stream."""
        pump = self._pumps.get(session_id)
        if pump is None:
            return
        pump.events.discard(event)
        if not pump.events:
            pump.stop()
            del self._pumps[session_id]

    def wake_all(self) -> None:
        """Wake every stream (the server is stopping)."""
        for pump in self._pumps.values():
            pump.wake()

    def close(self) -> None:
        """Stop every pump."""
        for pump in self._pumps.values():
            pump.stop()
        self._pumps.clear()
