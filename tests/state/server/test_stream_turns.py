"""Turns of one session's watch streams: at most ``SLICE`` writes in flight, handed out together.

A stream that finished its turn frees its slot; the next waiting streams get their turns only
once ``REFILL`` slots are free, all in the same pass of the event loop, so their writes leave
together rather than one loop pass (and one completion round trip) per stream. A stream that
sent everything it had asks for no further turn until the feed has news.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from support.bridge import WAIT

from dspex._model import make_spec
from dspex.state import LocalProvider
from dspex.state.server.feed import SessionFeed
from dspex.state.server.streams import TURN, FeedReader, WatchPlan
from dspex.state.server.wakeups import REFILL, SLICE, StreamWaiter, Turns


async def _turn_groups(streams: int) -> list[int]:
    """Queue ``streams`` waiting streams, end one turn per loop pass while any is given, and
    return how many streams got their turn together in each group (woken after as many ended
    turns)."""
    loop = asyncio.get_running_loop()
    turns = Turns(loop)
    waiters = [StreamWaiter(loop) for _ in range(streams)]
    given: list[StreamWaiter] = []
    ended_when_given: list[int] = []
    ended = 0

    async def stream(waiter: StreamWaiter) -> None:
        await waiter.wait(idle=False)
        given.append(waiter)
        ended_when_given.append(ended)

    tasks = [loop.create_task(stream(waiter)) for waiter in waiters]
    await asyncio.sleep(0)  # every stream waits for its turn
    for waiter in waiters:
        turns.queue(waiter)
    for _ in range(100 * streams):
        await asyncio.sleep(0)
        if ended < len(given):
            turns.done(given[ended])  # the oldest turn in flight ends
            ended += 1
        if ended == streams:
            break
    await asyncio.gather(*tasks)
    return list(Counter(ended_when_given).values())


def test_turns_are_given_in_groups_once_enough_slots_are_free() -> None:
    groups = asyncio.run(_turn_groups(100))
    assert sum(groups) == 100
    assert groups[0] == SLICE  # the first group fills every slot
    assert all(size >= REFILL for size in groups[1:-1])  # then REFILL at a time, never one
    assert len(groups) <= 2 + (100 - SLICE) // REFILL


def test_a_stream_that_sent_everything_has_nothing_pending_until_the_next_change() -> None:
    local = LocalProvider()
    session_id = local.create_session()
    local.register_variable(session_id, "t", make_spec(float), 0.0)
    news = threading.Semaphore(0)
    feed = SessionFeed(local, session_id, 64, lambda _feed: news.release())
    try:
        reader = FeedReader(feed, WatchPlan(None, False, None, "all"), feed.covered)
        assert not reader.pending and reader.take() == []
        for step in range(3):
            local.set_variable(session_id, "t", step / 10)
        while feed.covered < local.get_session(session_id).revision:
            assert news.acquire(timeout=WAIT)
        assert reader.pending  # news: the stream asks for a turn
        sent = reader.take()
        assert sent is not None and len(sent) == min(3, TURN)
        while sent:
            sent = reader.take()
        assert not reader.pending  # sent everything: it goes idle without another turn
    finally:
        feed.stop()
