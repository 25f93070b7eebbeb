"""A Remote's calls carry the session's changes, so workers need not wait for their streams.

Through real spawned workers joined to the session's embedded store. The store's event loop is
stalled (a blocking callback put on it, as a stalled server would be), so no watch stream can
deliver anything: a call made after a ``session.set`` must still read the new value from the
worker's cache, before the store answers again. Before calls carried the changes, each worker
waited for its stream, so it read only after the stall.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from support.faults import stalled_loop

import dspex
from dspex.bench._remote import FleetProbe
from dspex.remote._carry import CARRY_LIMIT, STREAM_LINGER, ChangeCarrier

pytestmark = pytest.mark.timeout(180)

STALL = 3.0
"""Seconds the store's event loop is held."""


@contextmanager
def stalled_store(session: dspex.Session) -> Iterator[list[int]]:
    """Stall the session's embedded store for ``STALL`` seconds (see ``stalled_loop``)."""
    with stalled_loop(session._embedded.server._loop, STALL) as released:  # type: ignore[union-attr]
        yield released


def fleet(session: dspex.Session, workers: int) -> dspex.Remote:
    session.register("temperature", float, 0.0, min=0.0, max=2.0)
    return dspex.Remote(FleetProbe(), workers, timeout=60)  # type: ignore[arg-type]


def test_a_set_reaches_every_worker_while_the_store_is_stalled(session: dspex.Session) -> None:
    with fleet(session, 2) as remote:
        remote.map([{"linger": 0.2}] * 2, progress=False)  # every worker is up and caught up
        with stalled_store(session) as released:
            session.set("temperature", 0.4)
            results = remote.map([{"linger": 0.2}] * 2, progress=False)
            assert not released, "the calls waited for the stalled store"
        assert [value for value, _, _ in results] == [0.4, 0.4]
        assert len({pid for _, _, pid in results}) == 2
        # The streams' own copies arrive after the stall and change nothing.
        time.sleep(0.5)
        assert [value for value, _, _ in remote.map([{}] * 4, progress=False)] == [0.4] * 4


def test_successive_sets_each_reach_the_next_call(session: dspex.Session) -> None:
    with fleet(session, 1) as remote:
        remote()
        with stalled_store(session) as released:
            seen = []
            for step in range(1, 6):
                session.set("temperature", step / 10)
                seen.append(remote()[0])
            assert not released
        assert seen == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_changes_too_large_to_carry_wait_for_the_stream(session: dspex.Session) -> None:
    """A value over ``CARRY_LIMIT`` is not copied into every call: the worker waits for its
    stream, and still reads the new value."""
    session.register("blob", str, "")
    with fleet(session, 1) as remote:
        remote()
        with stalled_store(session) as released:
            session.set("blob", "x" * (CARRY_LIMIT + 1))
            session.set("temperature", 0.7)
            value, read_at, _ = remote()
        assert released and read_at > released[0], "read before the stream delivered"
        assert value == 0.7


class CacheLinger:
    """Returns the linger of the worker's read cache (its session's provider)."""

    def __call__(self) -> float:
        from dspex.session import current_session

        return float(current_session().provider.linger)  # type: ignore[attr-defined]


def test_worker_streams_linger_only_when_calls_carry_the_changes(
    session: dspex.Session,
) -> None:
    """Calls carry changes only from a session this process holds; only then may the workers'
    cache streams hold news (a session on another store reaches its workers by their streams)."""
    with dspex.Remote(CacheLinger(), 1, timeout=60) as remote:
        assert remote() == STREAM_LINGER
    address = session.promote()
    with dspex.Session(store=address, session_id=session.session_id) as joined:
        joined.register("temperature", float, 0.0)
        assert ChangeCarrier(joined).stamp()[1] is None
        with dspex.Remote(CacheLinger(), 1, timeout=60, session=joined) as remote:
            assert remote() == 0.0
