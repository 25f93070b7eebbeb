"""Engines: the thread that reads a RedisEngine's feed stream and calls its listeners.

Why a stream and not pub/sub: pub/sub drops messages while a subscriber is disconnected, while
a stream entry is written by the same Lua script as the commit (so it exists exactly when the
commit does) and can be re-read from any id after a reconnect. A commit of large values
carries only its first and last revision (so the feed stays small); the reader reads it from
the session's change log and delivers it as one batch.

No gap, no duplicate: the reader tracks the last delivered revision of every session. Updates
at or below it are skipped; a jump (the stream was trimmed past a slow reader, or Redis was
unreachable) is filled from the session's change log, exactly as a watch resumes. If the log no
longer holds them either, the updates after the gap are delivered and every watcher of the
session ends with ``watch_lagged`` at the gap (the hub's watchers check every revision). After a
reconnect it takes a fresh snapshot: a session that vanished (dropped, or Redis restarted
without persistence) is delivered as closed; one recreated under the same id is closed and
replayed from its start.

Redis can also lose its data without the connection breaking (``FLUSHALL``, a failover to an
empty replica): the feed then just goes quiet, and watchers and read caches would go on serving
sessions that no longer exist. So every second the reader also compares the store's data mark
(:meth:`RedisEngine.mark`) with the one it started with, and resyncs as after a reconnect when
it changed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

import dspex.errors as errors
from dspex._model import VariableUpdate
from dspex.state.engines.codec import record_from_dict
from dspex.state.engines.contract import EngineListener, LogCompacted, UnknownSession, mark_batch

if TYPE_CHECKING:
    from dspex.state.engines.redis import RedisEngine

__all__ = ["FeedReader"]

_log = logging.getLogger("dspex.state.redis")

_BLOCK_MS = 500
_MAX_BACKOFF = 2.0
_MARK_CHECK = 1.0
"""Seconds between checks that Redis still holds the data the reader started from."""


class FeedReader(threading.Thread):
    """Reads ``engine``'s feed from where :meth:`start` was called and calls listeners."""

    def __init__(self, engine: RedisEngine) -> None:
        super().__init__(name=f"dspex-redis-feed-{engine.prefix}", daemon=True)
        self.engine = engine
        self.listeners: list[EngineListener] = []
        self.client = engine.connect(socket_timeout=_BLOCK_MS / 1000 + 5.0)
        self._stop_event = threading.Event()
        # session id -> (last delivered revision, created_at: tells a recreated session apart)
        self._sessions: dict[str, tuple[int, str]]
        self.last_id, self._sessions = engine.snapshot()  # raises StoreUnavailableError
        self._mark = engine.mark()
        self._marked = time.monotonic()  # when the mark was last compared

    def add(self, listener: EngineListener) -> None:
        """Deliver to ``listener`` too."""
        self.listeners.append(listener)

    def stop(self) -> None:
        """End the thread and close its connection (which interrupts a blocked read)."""
        self._stop_event.set()
        self.client.connection_pool.disconnect()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=_BLOCK_MS / 1000 + 6.0)
        self.client.close()

    def run(self) -> None:
        backoff = 0.05
        resync = False
        while not self._stop_event.is_set():
            try:
                if resync:
                    self._resync()
                    resync, backoff = False, 0.05
                self._read_once()
            except Exception as exc:  # the thread must outlive anything; it resyncs instead
                if self._stop_event.is_set():
                    return
                if not isinstance(exc, redis.RedisError | errors.StoreError):
                    _log.exception("Redis feed reader failed; resyncing")
                elif not resync:
                    _log.warning("Redis feed at %s lost (%s); reconnecting", self.engine.url, exc)
                resync = True
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def _read_once(self) -> None:
        if time.monotonic() - self._marked >= _MARK_CHECK:
            self._marked = time.monotonic()
            if self.client.get(self.engine.mark_key) != self._mark:
                self._resync()  # Redis lost its data: close the sessions it no longer holds
        feed = self.engine.feed_key
        reply: Any = self.client.xread({feed: self.last_id}, count=256, block=_BLOCK_MS)
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                if self._stop_event.is_set():
                    return
                try:
                    self._handle(fields)
                except (redis.RedisError, errors.StoreError):
                    raise  # connection trouble: resync, then read this entry again
                except Exception:  # a bad entry must not stop the feed; the log fills gaps
                    _log.exception("skipping unreadable Redis feed entry %s", entry_id)
                self.last_id = entry_id

    def _handle(self, fields: dict[str, str]) -> None:
        session_id = fields["s"]
        event = fields.get("e")
        if event == "create":
            if session_id in self._sessions:  # a drop we never saw: the old one is gone
                self._deliver(session_id, (), closed=True)
            self._sessions[session_id] = (0, fields["c"])
        elif event == "drop":  # delivered even if untracked (its create may have been trimmed)
            self._sessions.pop(session_id, None)
            self._deliver(session_id, (), closed=True)
        elif "r" in fields:  # a commit of large values: announced, read from the log
            self._reach(session_id, int(fields["f"]), int(fields["r"]))
        else:
            updates = [_update(data) for data in json.loads(fields["u"])]
            self._offer(session_id, mark_batch(updates) if len(updates) > 1 else updates)

    def _offer(self, session_id: str, updates: Sequence[VariableUpdate]) -> None:
        """Deliver ``updates`` that are new; fill a jump from the session's change log."""
        last, created = self._sessions.get(session_id, (0, ""))
        fresh = [update for update in updates if update.revision > last]
        if not fresh:
            return
        if fresh[0].revision != last + 1 or session_id not in self._sessions:
            self._sessions[session_id] = (last, created)
            self._fill(session_id)
            return
        self._sessions[session_id] = (fresh[-1].revision, created)
        self._deliver(session_id, fresh, closed=False)

    def _reach(self, session_id: str, first: int, last: int) -> None:
        """Deliver the commit of revisions ``first..last`` (and any before it not delivered
        yet) from the session's change log, marked as one batch if it wrote several."""
        delivered, created = self._sessions.get(session_id, (0, ""))
        if session_id in self._sessions and last <= delivered:
            return
        self._sessions[session_id] = (delivered, created)
        self._fill(session_id, (first, last) if last > first else None)

    def _fill(self, session_id: str, batch: tuple[int, int] | None = None) -> None:
        """Deliver the session's logged updates after the last delivered one (those of
        revisions ``batch`` marked as one atomic batch)."""
        last, created = self._sessions[session_id]
        try:
            try:
                updates = self.engine.changes(session_id, last)
            except LogCompacted as compacted:
                oldest = int(compacted.args[0])
                _log.warning(
                    "Redis feed: session %s: updates %d..%d were trimmed from the feed and the "
                    "change log before this server read them; its watchers end with watch_lagged",
                    session_id, last + 1, oldest - 1,
                )  # fmt: skip
                try:
                    updates = self.engine.changes(session_id, oldest - 1)
                except LogCompacted:
                    return  # compacted again meanwhile: the next entry fills from there
        except UnknownSession:
            return  # dropped meanwhile: its drop entry (or the next resync) closes it
        if not updates:
            return
        self._sessions[session_id] = (updates[-1].revision, created)
        if batch is None:
            self._deliver(session_id, updates, closed=False)
            return
        inside = [u for u in updates if batch[0] <= u.revision <= batch[1]]
        before = [u for u in updates if u.revision < batch[0]]
        after = [u for u in updates if u.revision > batch[1]]
        for part in (before, mark_batch(inside) if len(inside) > 1 else inside, after):
            if part:
                self._deliver(session_id, part, closed=False)

    def _resync(self) -> None:
        """After a reconnect: compare a fresh snapshot with what was delivered, fill the gaps."""
        mark = self.engine.mark()
        if mark != self._mark:
            _log.warning(
                "Redis at %s lost its data (flushed, or restarted without persistence): the "
                "sessions it no longer holds are closed for their watchers",
                self.engine.safe_url,
            )
            self._mark = mark
        last_id, now = self.engine.snapshot()
        for session_id, (last, created) in list(self._sessions.items()):
            current = now.get(session_id)
            if current is None or current[0] < last or (created and current[1] != created):
                del self._sessions[session_id]
                self._deliver(session_id, (), closed=True)
        for session_id, (revision, created) in now.items():
            last = self._sessions.get(session_id, (0, created))[0]
            self._sessions[session_id] = (last, created)
            if revision > last:
                self._fill(session_id)
        self.last_id = last_id

    def _deliver(self, session_id: str, updates: Sequence[VariableUpdate], closed: bool) -> None:
        for listener in list(self.listeners):
            try:
                listener(session_id, updates, closed)
            except Exception:
                _log.exception("engine listener failed on session %s", session_id)


def _update(data: dict[str, Any]) -> VariableUpdate:
    record = record_from_dict(data["record"])
    return VariableUpdate(data["revision"], data["kind"], record.name, record)
