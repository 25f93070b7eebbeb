"""A worker whose read cache stays behind the caller's revision reads from the store instead.

In process, through the worker's real call handler and a real store server (the session's
embedded store on loopback): the worker's cache follows the session on a stream that holds its
news for 1 s (``linger``), so it is live but behind when a call stamped after a ``session.set``
arrives without the changes (as from a session on a ``dspex serve`` store). The handler waits
``CATCH_UP_TIMEOUT`` for the stream and then must not serve the old value from the cache.
"""

from __future__ import annotations

import pytest

import dspex
from dspex.remote import _worker
from dspex.remote._worker import CallPayload, RemoteHandler
from dspex.state.store import CachedProvider, SessionStoreProvider

pytestmark = pytest.mark.timeout(60)


class ReadTemperature:
    def __call__(self) -> float:
        return float(dspex.current_session().get("temperature"))


def test_a_call_the_cache_cannot_catch_up_to_reads_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_worker, "CATCH_UP_TIMEOUT", 0.2)  # the stream holds news for 1 s
    with dspex.Session() as session:
        session.register("temperature", float, 0.1)
        address = session.promote()
        store = SessionStoreProvider(address, token=session.store_token)
        cache = CachedProvider(store, linger=1.0)
        try:
            cache.follow(session.session_id)
            worker_session = dspex.Session(cache, session_id=session.session_id)
            handler = RemoteHandler(ReadTemperature(), worker_session, cache)
            assert cache.get_variable(session.session_id, "temperature").value == 0.1
            revision = session.set("temperature", 0.7).revision
            with worker_session:
                seen = handler(CallPayload(revision, (), {}))
            assert seen == 0.7  # before: 0.1, the cache's value, a second behind the store
        finally:
            cache.close()
