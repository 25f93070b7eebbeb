"""Server side: the parts of one ``WatchVariables`` stream around the shared session feed.

A stream starts from its own backlog (initial records, changes replayed after
``after_revision``), read through a short-lived provider watch of every name, and then follows
the session's :class:`~dspex.state.server.feed.SessionFeed` from the revision the backlog
covered. Filters (the requested names and the access guard's ``observe`` filter) apply to both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any, Final, NamedTuple

from dspex.errors import DspexError
from dspex.state.core.contract import StateProvider
from dspex.state.core.limits import uncounted_watch
from dspex.state.core.watch import END
from dspex.state.server import convert
from dspex.state.server.feed import Entry, SessionFeed, complete_batch, encode
from dspex.state.server.wakeups import StreamWaiter
from dspex.state.wire.status import internal_error

__all__ = ["Backlog", "FeedReader", "WatchPlan", "heartbeat", "open_backlog", "send", "shown"]

TURN: Final = 2
"""Most messages a stream sends per turn (then the next streams of the session go first)."""

COALESCED_UPDATES: Final = 512
"""Most updates one ``WatchUpdates`` message carries (streams that asked to ``coalesce``)."""

COALESCED_BYTES: Final = 1 << 20
"""Most encoded bytes one ``WatchUpdates`` message carries, beyond its first update: far under
any client's receive limit, so a burst of large values never makes a message too big."""


class WatchPlan(NamedTuple):
    """What one stream asked for: where to start, and which changes it may see.

    ``key`` identifies the filter (names, and the principal whose ``observe`` filter
    applies), so streams with the same filter share the work of filtering the feed.
    """

    after: int | None
    initial: bool
    shown: Callable[[str], bool] | None
    key: Hashable
    coalesce: bool = False
    linger: float = 0.0
    """Seconds to hold news before sending it (the request's ``linger_ms``)."""


class Backlog(NamedTuple):
    """A stream's start: its ``start`` revision, its backlog entries, the revision they cover,
    and the error the provider watch ended with, if any."""

    start: int
    entries: list[Entry]
    covered: int
    ended: DspexError | None


def shown(
    names: frozenset[str], visible: Callable[[str], bool] | None
) -> Callable[[str], bool] | None:
    """The stream's filter over variable names (None: every change is shown)."""
    if names and visible is not None:
        return lambda name: name in names and visible(name)
    if names:
        return names.__contains__
    return visible


def open_backlog(provider: StateProvider, session_id: str, plan: WatchPlan) -> Backlog:
    """Read the stream's backlog through a provider watch of every name, then close it.

    The watch is uncounted (the server counts its streams against ``max_watchers``) and
    unfiltered, so the revision it covered is exact whatever the stream's filter.

    Raises:
        DspexError: the session cannot be watched from there (missing, cannot resume...).
        StoreError: a record of the backlog cannot be encoded (logged: a bug).
    """
    token = uncounted_watch.set(True)
    try:
        watch = provider.watch_variables(
            session_id, after_revision=plan.after, include_initial=plan.initial
        )
    finally:
        uncounted_watch.reset(token)
    try:
        start = watch.last_revision
        updates = []
        ended: DspexError | None = None
        try:
            while (update := watch.poll(0)) is not None:
                updates.append(update)
            complete_batch(watch, updates)
        except DspexError as exc:
            ended = exc
        try:
            entries = [encode(u) for u in updates]
        except Exception as exc:  # a record no stream can carry: said as a unary call says it
            raise internal_error(exc) from exc
        return Backlog(start, entries, watch.last_revision, ended)
    finally:
        watch.cancel()


async def send(context: Any, waiter: StreamWaiter, payloads: list[bytes]) -> None:
    """Write encoded stream messages, noting when the stream last sent something."""
    for payload in payloads:
        await context.write(payload)
    if payloads:
        waiter.last_sent = time.monotonic()


def heartbeat() -> bytes:
    """An encoded heartbeat message carrying the server's time."""
    return bytes(convert.watch_heartbeat(time.time()).SerializeToString())


class FeedReader:
    """One stream's position in its session's feed: what it sends next, a turn at a time.

    ``covered`` is the revision up to which the stream has sent (or filtered out) every change:
    where a client resumes if the stream ends now.
    """

    def __init__(self, feed: SessionFeed, plan: WatchPlan, covered: int) -> None:
        self.feed = feed
        self.plan = plan
        self.covered = covered
        self._cursor = feed.cursor_after(covered)  # None: fell behind before it started
        self._items: list[tuple[int, bytes]] = []
        self._next = 0
        self._target = covered  # covered once the current items are sent
        self._lagged = False

    def take(self) -> list[bytes] | None:
        """The messages to send now: at most :data:`TURN` of them, or one ``WatchUpdates`` of
        everything pending (within :data:`COALESCED_UPDATES` / :data:`COALESCED_BYTES`) for a
        stream that asked to coalesce; [] if there is no news; None once the feed ended
        normally and everything was sent.

        Raises:
            DspexError: how the stream ends (it lagged, the session expired...).
        """
        ended = self.feed.ended  # before reading: the feed ends only after its last append
        if self._next >= len(self._items) and not self._read():
            if not ended:
                return []
            if self.feed.ending is END:
                return None
            raise self.feed.end_error(self.covered)
        if self.plan.coalesce:
            chunk = _coalescible(self._items, self._next)
        else:
            chunk = self._items[self._next : self._next + TURN]
        self._next += len(chunk)
        self.covered = self._target if self._next >= len(self._items) else chunk[-1][0]
        payloads = [payload for _, payload in chunk]
        return [coalesced(payloads)] if len(payloads) > 1 and self.plan.coalesce else payloads

    @property
    def pending(self) -> bool:
        """True when :meth:`take` may have something to send or an end to report: items
        left from the last read, or the feed moved past the cursor or ended."""
        feed = self.feed
        return self._next < len(self._items) or feed.next_seq != self._cursor or feed.ended

    def _read(self) -> bool:
        """Read the feed past the cursor; False when there is nothing new to send.

        Raises:
            WatchLaggedError: the stream fell behind the feed.
        """
        while True:
            if self._lagged or self._cursor is None:
                raise self.feed.lagged(self.covered)
            view = self.feed.view(self.plan.key, self.plan.shown, self._cursor)
            if view is None:
                raise self.feed.lagged(self.covered)
            if view.cursor_after == self._cursor:
                return False
            self._cursor, self._target, self._lagged = (
                view.cursor_after,
                view.covered,
                view.lagged,
            )
            self._items, self._next = view.items, 0
            if view.items and view.items[0][0] <= self.covered:  # the backlog sent these
                self._items = [item for item in view.items if item[0] > self.covered]
            if self._items:
                return True
            self.covered = max(self.covered, view.covered)


def _coalescible(items: list[tuple[int, bytes]], start: int) -> list[tuple[int, bytes]]:
    """The items from ``start`` that one ``WatchUpdates`` message carries (at least one)."""
    end = min(len(items), start + COALESCED_UPDATES)
    size = len(items[start][1])
    stop = start + 1
    while stop < end and size + len(items[stop][1]) <= COALESCED_BYTES:
        size += len(items[stop][1])
        stop += 1
    return items[start:stop]


_UPDATE_TAG: Final = 0x12  # WatchVariablesResponse.update: field 2, length-delimited
_UPDATES_ITEM_TAG: Final = b"\x0a"  # WatchUpdates.updates: field 1, length-delimited
_UPDATES_TAG: Final = b"\x22"  # WatchVariablesResponse.updates: field 4, length-delimited


def coalesced(payloads: list[bytes]) -> bytes:
    """One encoded ``WatchVariablesResponse{updates}`` carrying the updates of ``payloads``.

    Each payload is an encoded ``WatchVariablesResponse{update}``: its one field is the
    ``VariableUpdate``, so re-tagging it as an item of ``WatchUpdates.updates`` (same length
    prefix) re-uses the bytes encoded once for every stream, with no decode.
    """
    if any(payload[0] != _UPDATE_TAG for payload in payloads):
        raise ValueError("only update messages can be coalesced")
    body = b"".join(_UPDATES_ITEM_TAG + payload[1:] for payload in payloads)
    return _UPDATES_TAG + _varint(len(body)) + body


def _varint(number: int) -> bytes:
    """``number`` as a protobuf base-128 varint."""
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
