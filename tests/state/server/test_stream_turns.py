"""Turns of a session's watch streams: a stream that sent everything it had asks for no
further turn (it goes idle at once) until the session's feed has news."""

from __future__ import annotations

import threading

from support.bridge import WAIT

from dspex._model import make_spec
from dspex.state import LocalProvider
from dspex.state.server.feed import SessionFeed
from dspex.state.server.streams import TURN, FeedReader, WatchPlan


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
