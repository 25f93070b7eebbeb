"""Server side: one shared, pre-encoded change log per watched session (the watch fan-out).

The server holds ONE provider watch per watched session, whatever the number of its
``WatchVariables`` streams. A pump thread reads each change from it once, encodes its
``WatchVariablesResponse`` once (bytes, sent as they are) and appends it to the session's
bounded :class:`SessionFeed`; every stream reads the feed with its own cursor and filter. A
commit therefore costs its writer one queue put, however many streams watch, and the encoding
never runs per stream. A stream that falls behind the feed by more than its length ends with
``watch_lagged`` and a ``resume_from`` that works (the revision it had covered).

The pump's own watch is gapless: if it lags (its queue overflowed, or this server fell behind a
shared engine's feed) it resumes from the last revision it logged, so streams see no gap. When
that resume is refused (the change log no longer reaches back), streams read the feed to its
end and then end with ``watch_lagged`` naming their own resume point. If the pump fails in a
way no one foresaw (a record it cannot encode), the failure is logged and the streams end with
an internal ``StoreError`` naming their own resume point: never a stream that stays silent.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Final, NamedTuple

from dspex._model import VariableUpdate
from dspex.errors import DspexError, StoreError, WatchLaggedError
from dspex.state.core.contract import StateProvider
from dspex.state.core.limits import uncounted_watch
from dspex.state.core.watch import END, VariableWatch
from dspex.state.server import convert
from dspex.state.wire.status import internal_error

__all__ = ["Entry", "SessionFeed", "View", "complete_batch", "encode", "shown_payloads"]

_PUMP_CHUNK: Final = 512
"""Most changes the pump reads before publishing them to the streams."""
_MIN_CAPACITY: Final = 1024
"""Fewest changes a feed keeps."""
_VIEWS: Final = 64
"""Filtered views kept per feed (one per distinct filter and cursor)."""


class Entry(NamedTuple):
    """One change as every stream sends it: ``payload`` is the encoded stream message.

    ``batch_last`` is the last revision of the atomic batch the change belongs to (0 outside
    a batch); ``end_payload`` is the message with ``batch_end`` set, sent by a stream whose
    filter lets no later change of the batch through.
    """

    revision: int
    name: str
    payload: bytes
    batch_last: int
    end_payload: bytes


def encode(update: VariableUpdate) -> Entry:
    """The update as a feed entry, encoded once for every stream."""
    message = convert.watch_update(update)
    if update.batch is None:
        payload = message.SerializeToString()
        return Entry(update.revision, update.name, payload, 0, payload)
    marked = type(message)()
    marked.CopyFrom(message)  # the converted message is shared (convert caches it): not in place
    marked.update.batch_end = False
    payload = marked.SerializeToString()
    marked.update.batch_end = True
    return Entry(
        update.revision, update.name, payload, update.batch.last, marked.SerializeToString()
    )


def shown_payloads(entries: Iterable[Entry], shown: Callable[[str], bool] | None) -> list[bytes]:
    """The payloads a stream with filter ``shown`` sends for ``entries`` (whole batches): the
    last change of each batch the filter lets through carries ``batch_end``."""
    return [payload for _, payload in _shown(entries, shown)]


def _shown(
    entries: Iterable[Entry], shown: Callable[[str], bool] | None
) -> list[tuple[int, bytes]]:
    """(revision, payload) of each entry ``shown`` lets through, batch ends marked."""
    kept = [e for e in entries if shown is None or shown(e.name)]
    out: list[tuple[int, bytes]] = []
    ended_batch = 0
    for entry in reversed(kept):
        if entry.batch_last and entry.batch_last != ended_batch:
            out.append((entry.revision, entry.end_payload))
            ended_batch = entry.batch_last
        else:
            out.append((entry.revision, entry.payload))
    out.reverse()
    return out


def _provider_watch(provider: StateProvider, session_id: str, after: int | None) -> VariableWatch:
    """A server-internal watch of every change (it does not count as a watcher)."""
    token = uncounted_watch.set(True)
    try:
        return provider.watch_variables(session_id, after_revision=after)
    finally:
        uncounted_watch.reset(token)


def complete_batch(watch: VariableWatch, updates: list[VariableUpdate]) -> None:
    """Read on until the last update's atomic batch is whole (its updates arrive together)."""
    while updates and (mark := updates[-1].batch) is not None and updates[-1].revision < mark.last:
        update = watch.poll(1.0)
        if update is None:
            return  # ended: what is there is all there will be
        updates.append(update)


class View(NamedTuple):
    """What a stream at a cursor sends next: ``items`` (revision, payload) up to
    ``cursor_after``, covering the session up to revision ``covered`` (filtered-out changes
    included). ``lagged``: the stream had more than the feed's ``size`` changes to send; it
    sends the first ``size`` and ends with ``watch_lagged`` resuming after ``covered``."""

    items: list[tuple[int, bytes]]
    cursor_after: int
    covered: int
    lagged: bool


class SessionFeed:
    """The bounded, encoded change log of one session, filled by a pump thread.

    Args:
        provider: where the session lives.
        session_id: the session.
        size: a stream with more than this many changes to send ends with ``watch_lagged``
            (the feed keeps twice as many, and at least ``_MIN_CAPACITY``, so a stream that
            had no turn during a burst still sends its first ``size`` before it lags).
        on_news: called from the pump thread after each append (wakes the streams).

    Raises:
        DspexError: the session cannot be watched.
    """

    def __init__(
        self,
        provider: StateProvider,
        session_id: str,
        size: int,
        on_news: Callable[[SessionFeed], None],
    ) -> None:
        self.provider = provider
        self.session_id = session_id
        self.size = size
        self.streams: set[Any] = set()  # the StreamWaiters reading this feed
        self._on_news = on_news
        self._watch = _provider_watch(provider, session_id, None)
        self._entries: deque[Entry] = deque()
        self._capacity = max(2 * size, _MIN_CAPACITY)  # a stream behind finds what it sends
        self._first_seq = 0  # sequence number of _entries[0]
        self.floor = self._watch.last_revision  # revision just before _entries[0]
        self.covered = self.floor  # revision of the last entry
        self.ending: Any = None  # END, or the DspexError streams end with after the last entry
        self._lock = threading.Lock()
        self._stopped = False
        self._views: dict[tuple[Hashable, int], View] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"dspex-watch-feed-{session_id[:12]}", daemon=True
        )
        self._thread.start()

    @property
    def next_seq(self) -> int:
        """Sequence number the next appended entry will get."""
        return self._first_seq + len(self._entries)

    @property
    def ended(self) -> bool:
        """True once nothing more will be appended."""
        return self.ending is not None

    def cursor_after(self, revision: int) -> int | None:
        """The cursor of the first entry after ``revision``; None if it is no longer kept."""
        with self._lock:
            if revision < self.floor:
                return None
            seq = self.next_seq
            for entry in reversed(self._entries):
                if entry.revision <= revision:
                    break
                seq -= 1
            return seq

    def view(self, key: Hashable, shown: Callable[[str], bool] | None, cursor: int) -> View | None:
        """What a stream with filter ``shown`` (identified by ``key``) at ``cursor`` sends next,
        or None if ``cursor`` is no longer kept (the stream lagged). Computed once per filter
        and cursor and shared by every stream there (event loop only)."""
        cached = self._views.get((key, cursor))
        if cached is not None and cached.cursor_after == self.next_seq:
            return cached
        with self._lock:
            if cursor < self._first_seq:
                return None
            entries = list(self._tail(cursor))
            next_seq = self.next_seq
            covered = self.covered
        pending = _shown(entries, shown)
        if len(pending) > self.size:  # behind by more than its queue: send that much, then lag
            view = View(pending[: self.size], next_seq, pending[self.size - 1][0], True)
        else:
            view = View(pending, next_seq, covered, False)
        if len(self._views) >= _VIEWS:
            self._views.clear()
        self._views[(key, cursor)] = view
        return view

    def _tail(self, cursor: int) -> Sequence[Entry]:
        start = cursor - self._first_seq
        if start == 0:
            return self._entries
        return [self._entries[i] for i in range(start, len(self._entries))]

    def stop(self) -> None:
        """End the pump thread (the last stream left, or the server stops)."""
        with self._lock:
            self._stopped = True
        self._watch.cancel()

    # -- the pump thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._pump():
                self._on_news(self)
        except Exception as exc:  # never leave the streams silent: they end with the error
            self._end(internal_error(exc))
        finally:
            self._on_news(self)

    def _pump(self) -> bool:
        """Read, encode and append the next changes; False once the feed has ended."""
        try:
            first = self._watch.poll(None)
            updates = [first] if first is not None else []
            chunk = min(_PUMP_CHUNK, self.size)  # a stream that keeps up never lags on one
            while updates and len(updates) < chunk and (u := self._watch.poll(0)):
                updates.append(u)
            complete_batch(self._watch, updates)
        except WatchLaggedError as exc:
            return self._resume(exc)
        except DspexError as exc:
            self._end(exc)
            return False
        if not updates:  # the watch ended: the session was closed, or the pump stopped
            self._end(END)
            return False
        self._append([encode(u) for u in updates])
        return True

    def _append(self, entries: list[Entry]) -> None:
        with self._lock:
            self._entries.extend(entries)
            self.covered = entries[-1].revision
            while len(self._entries) > self._capacity:
                self.floor = self._entries.popleft().revision
                self._first_seq += 1

    def _resume(self, lag: WatchLaggedError) -> bool:
        """The pump's watch lagged: watch again from the last logged revision (no gap)."""
        with self._lock:
            if self._stopped:
                return False
        try:
            self._watch = _provider_watch(self.provider, self.session_id, self.covered)
        except DspexError as exc:
            why = str(lag).split("; resume with", 1)[0]
            self._end(WatchLaggedError(f"{why}, and the change log no longer reaches back: {exc}"))
            return False
        return True

    def _end(self, ending: Any) -> None:
        with self._lock:
            self.ending = END if self._stopped else ending

    def end_error(self, covered: int) -> DspexError:
        """The error ending a stream that read the whole feed (which ended abnormally); a
        store error (the pump failed) says where the stream resumes."""
        ending = self.ending
        if isinstance(ending, WatchLaggedError):
            return self.lagged(covered, str(ending))
        if isinstance(ending, StoreError) and "resume_from" not in ending.details:
            return type(ending)(
                f"{ending.message}; this watch stream ended: watch again with "
                f"after_revision={covered}",
                **{**ending.details, "resume_from": covered},
            )
        return ending  # type: ignore[no-any-return]

    def lagged(self, covered: int, why: str | None = None) -> WatchLaggedError:
        """The error ending a stream that covered the session up to ``covered``."""
        reason = why or (
            f"watcher fell behind (more than {self.size} changes behind this server's log of "
            "the session)"
        )
        return WatchLaggedError(
            f"{reason}; resume with after_revision={covered}", resume_from=covered
        )
