"""Layer 3: the session changes a ``dspex.Remote`` sends along with its calls.

A worker sees a change made in the parent before a call once its read cache has applied the
revision the call carries. Waiting for the cache's watch stream to deliver it puts the store's
fan-out to every worker on each call's path: with a hundred workers on two cores, that fan-out
is most of the time from a ``session.set`` to the next call on every worker seeing it.

So when the parent holds the session itself (a local session promoted for its workers), each
call also carries the changes since the revision the previous calls were stamped with, pickled
once and shared by every call stamped alike. The worker applies them to its cache
(:meth:`dspex.state.client.CachedProvider.catch_up`) and runs at once; its stream's own copies
of them are skipped later. Nothing changes for correctness: a worker whose stream has not
reached the carried changes' start, a change log that no longer reaches back, changes too large
to send with every call, or a session held by a ``dspex serve`` store all fall back to waiting
for the stream.
"""

from __future__ import annotations

import threading
from typing import Final, NamedTuple

from dspex.errors import WatchLaggedError
from dspex.runtime._pickling import dumps
from dspex.session import Session
from dspex.state import LocalProvider

__all__ = ["CARRY_LIMIT", "STREAM_LINGER", "CarriedChanges", "ChangeCarrier", "stream_linger"]

CARRY_LIMIT: Final = 256 * 1024
"""Largest pickled change set sent with calls (bytes); larger ones are left to the stream, so a
big value is not copied into every call of a ``map``."""

STREAM_LINGER: Final = 0.05
"""Seconds the store holds news for the cache stream of a worker whose calls carry changes.

The calls that follow a change get it directly; the stream's copy is needed only by a call
already running when another process changes the session. Sent at once, that copy (one message
to every worker) competes for the CPU with the calls dispatched right after the change; held,
it goes out after them, with whatever else changed meanwhile."""


def held_here(session: Session) -> LocalProvider | None:
    """The session's provider when this process holds the session (calls then carry its
    changes); None for a session on another store."""
    provider = session.provider
    return provider if isinstance(provider, LocalProvider) else None


def stream_linger(session: Session) -> float:
    """The linger of the workers' cache streams: :data:`STREAM_LINGER` when calls carry the
    session's changes (:func:`held_here`), else 0 (the streams are how workers catch up)."""
    return 0.0 if held_here(session) is None else STREAM_LINGER


class CarriedChanges(NamedTuple):
    """Every change of the session after revision ``after`` up to the call's revision."""

    after: int
    updates: bytes
    """The ``list[VariableUpdate]``, pickled (cloudpickle)."""


class ChangeCarrier:
    """Stamps calls with the session's revision and the changes that led to it.

    Args:
        session: the session the Remote's workers join. Its changes are carried only when its
            provider is this process's own (:class:`~dspex.state.LocalProvider`).
    """

    def __init__(self, session: Session) -> None:
        self._session_id = session.session_id
        self._provider = session.provider
        self._local = held_here(session)
        self._lock = threading.Lock()
        # The first carried changes start here: before any worker's cache opened. (Another
        # store is not asked now: it may not answer yet, and its changes are not carried.)
        revision = (
            0 if self._local is None else self._local.get_session(session.session_id).revision
        )
        self._stamp: tuple[int, CarriedChanges | None] = (revision, None)

    def stamp(self) -> tuple[int, CarriedChanges | None]:
        """The session revision now, and the changes since the previous stamp's revision.

        Calls stamped at the same revision share one stamp, so a worker that missed the
        first calls after a change still gets it with a later one.
        """
        revision = self._provider.get_session(self._session_id).revision
        if self._local is None:
            return revision, None
        with self._lock:
            last, _ = self._stamp
            if revision > last:
                self._stamp = (revision, self._carry(last, revision))
            elif revision < last:  # read before a concurrent caller's newer stamp
                return revision, None
            return self._stamp

    def _carry(self, after: int, revision: int) -> CarriedChanges | None:
        assert self._local is not None
        try:
            updates = self._local.changes(self._session_id, after)
        except WatchLaggedError:  # the log moved on: the workers' streams catch up themselves
            return None
        blob = dumps([update for update in updates if update.revision <= revision])
        return CarriedChanges(after, blob) if len(blob) <= CARRY_LIMIT else None
