"""Core: the watch hub: per-session watchers fed by the engine's commit feed.

Watchers are fed only from the engine feed, so commits made by any server sharing the engine
reach them. A new watcher buffers live updates while its backlog (initial records, replayed
changes) is loaded, then de-duplicates by revision, so it sees no gap and no duplicate.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import dspex.errors as errors
from dspex._model import VariableUpdate
from dspex.state.core.watch import END

__all__ = ["WatchHub", "Watcher"]


class Watcher:
    """One watch's bounded queue, name filter and resume position."""

    __slots__ = (
        "buffer", "counted", "items", "lagged", "last_put", "lock", "max_queue", "names",
    )  # fmt: skip

    def __init__(self, names: frozenset[str], max_queue: int, counted: bool = True) -> None:
        self.counted = counted  # counts against max_watchers (store-internal watches do not)
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.names = names
        self.max_queue = max_queue
        self.lagged = False
        self.last_put = 0
        self.lock = threading.Lock()
        self.buffer: list[VariableUpdate] | None = []  # live updates held while loading

    @classmethod
    def live(cls, names: frozenset[str], max_queue: int, after: int) -> Watcher:
        """A watcher with no backlog to load, live from revision ``after``."""
        watcher = cls(names, max_queue)
        watcher.last_put = after
        watcher.buffer = None
        return watcher

    def offer(self, update: VariableUpdate) -> None:
        """Queue a live update (or hold it while the backlog loads)."""
        with self.lock:
            if self.buffer is not None:
                self.buffer.append(update)
            else:
                self._put_live(update)

    def offer_batch(self, updates: Sequence[VariableUpdate]) -> None:
        """Queue the updates of one atomic batch together, the last one this watcher's name
        filter lets through marked as the batch's end."""
        shown = [i for i, u in enumerate(updates) if not self.names or u.name in self.names]
        if shown and (mark := updates[shown[-1]].batch) is not None:
            updates = list(updates)
            updates[shown[-1]] = updates[shown[-1]]._replace(batch=mark._replace(end=True))
        with self.lock:
            for update in updates:
                if self.buffer is not None:
                    self.buffer.append(update)
                else:
                    self._put_live(update)

    def preload(self, updates: Iterable[VariableUpdate]) -> None:
        """Queue backlog updates; they do not count against the queue bound."""
        for update in updates:
            if update.kind == "initial" or update.revision > self.last_put:
                if not self.names or update.name in self.names:
                    self.items.put(update)
                self.last_put = max(self.last_put, update.revision)

    def go_live(self) -> None:
        """Flush updates held while loading (skipping those the backlog covered)."""
        with self.lock:
            held, self.buffer = self.buffer or [], None
            self.max_queue += self.items.qsize()  # live updates only count from here
            for update in held:
                self._put_live(update)

    def end(self, item: Any = END) -> None:
        """End the watch with END (normal) or an error."""
        self.items.put(item)

    def _put_live(self, update: VariableUpdate) -> None:
        if self.lagged or (update.revision <= self.last_put and update.kind != "initial"):
            return  # already covered by the backlog (initial records are always delivered)
        if self.names and update.name not in self.names:
            self.last_put = update.revision
            return
        if self.items.qsize() >= self.max_queue:
            self.lagged = True
            self.items.put(
                errors.WatchLaggedError(
                    f"watcher fell behind (queue of {self.max_queue} full); "
                    f"resume with after_revision={self.last_put}",
                    resume_from=self.last_put,
                )
            )
            return
        self.last_put = update.revision
        self.items.put(update)


class WatchHub:
    """Watchers by session; the engine listener calls :meth:`publish`."""

    def __init__(self) -> None:
        self._watchers: dict[str, list[Watcher]] = {}
        self._lock = threading.Lock()

    def add(self, session_id: str, watcher: Watcher) -> None:
        """Subscribe ``watcher`` to the session's updates."""
        with self._lock:
            self._watchers.setdefault(session_id, []).append(watcher)

    def remove(self, session_id: str, watcher: Watcher) -> None:
        """Unsubscribe ``watcher`` (no-op if gone)."""
        with self._lock:
            watchers = self._watchers.get(session_id, [])
            if watcher in watchers:
                watchers.remove(watcher)

    def count(self, session_id: str) -> int:
        """How many counted watchers the session has."""
        return sum(1 for w in self._watchers.get(session_id, ()) if w.counted)

    def publish(self, session_id: str, updates: Sequence[VariableUpdate], closed: bool) -> None:
        """Engine listener: deliver committed updates, or end every watch if ``closed``."""
        watchers = self._watchers.get(session_id)
        if not watchers:
            return
        if closed:
            self.end_session(session_id, END)
            return
        batch = len(updates) > 1 and updates[0].batch is not None
        for watcher in tuple(watchers):
            if batch:
                watcher.offer_batch(updates)
            else:
                for update in updates:
                    watcher.offer(update)

    def end_session(self, session_id: str, item: Any) -> None:
        """End every watch of the session with ``item`` (END or an error)."""
        with self._lock:
            watchers = self._watchers.pop(session_id, [])
        for watcher in watchers:
            watcher.end(item)

    def end_all(self) -> None:
        """End every watch normally (the provider is closing)."""
        with self._lock:
            sessions = list(self._watchers)
        for session_id in sessions:
            self.end_session(session_id, END)
