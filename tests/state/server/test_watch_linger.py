"""``linger_ms``: a watch stream may ask the store to hold its news and send it with what follows.

Through a real server on loopback with raw stubs: a lingering stream gets two sets made within
its linger in one message, where a plain stream gets the first at once; out-of-range lingers
are refused on both sides of the wire. (A Remote worker's cache stream lingers; see
``dspex.remote._carry``.)
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from support.bridge import FLOAT, raw_stub, served

from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex.errors import ConstraintError, StoreUnavailableError
from dspex.state import LocalProvider
from dspex.state.store import CachedProvider, SessionStoreProvider, StoreServer

pytestmark = pytest.mark.timeout(60)


def _revisions(message: Any) -> list[int]:
    event = message.WhichOneof("event")
    if event == "update":
        return [message.update.revision]
    if event == "updates":
        return [update.revision for update in message.updates.updates]
    return []


def _first_news(stream: Any) -> list[int]:
    for message in stream:
        if revisions := _revisions(message):
            return revisions
    raise AssertionError("the stream ended without news")


def test_a_lingering_stream_sends_news_with_what_followed() -> None:
    local = LocalProvider()
    session_id = local.create_session()
    head = local.register_variable(session_id, "t", FLOAT, 0.0).revision
    with served(local) as server, raw_stub(server.address) as stub:
        plain = stub.WatchVariables(pb.WatchVariablesRequest(session_id=session_id, coalesce=True))
        lingering = stub.WatchVariables(
            pb.WatchVariablesRequest(session_id=session_id, coalesce=True, linger_ms=1000)
        )
        for stream in (plain, lingering):
            assert next(stream).WhichOneof("event") == "started"
        local.set_variable(session_id, "t", 0.1)
        assert _first_news(plain) == [head + 1]  # sent at once, alone
        local.set_variable(session_id, "t", 0.2)  # well within the lingering stream's second
        assert _first_news(lingering) == [head + 1, head + 2]
        assert _first_news(plain) == [head + 2]


def test_a_linger_over_a_second_is_refused() -> None:
    local = LocalProvider()
    session_id = local.create_session()
    with served(local) as server, raw_stub(server.address) as stub:
        stream = stub.WatchVariables(
            pb.WatchVariablesRequest(session_id=session_id, linger_ms=1001)
        )
        with pytest.raises(grpc.RpcError) as raised:
            next(stream)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "linger_ms must be at most 1000" in (raised.value.details() or "")
        client = SessionStoreProvider(server.address)
        try:
            for linger in (-0.1, 1.5):
                with pytest.raises(ConstraintError, match="linger must be 0 to 1 seconds"):
                    client.watch_variables(session_id, linger=linger)
            with client.watch_variables(session_id, linger=0.2) as watch:  # own stream
                local.register_variable(session_id, "u", FLOAT, 0.0)
                update = watch.poll(timeout=10)
            assert update is not None and update.name == "u"
        finally:
            client.close()
    with pytest.raises(ConstraintError, match="session-store client"):
        CachedProvider(local, linger=0.05)


def test_a_stopping_server_ends_a_lingering_stream_with_where_to_resume() -> None:
    """The stop wakes a stream holding news: it ends at once with the revision to resume
    from (before the held change), within a short grace, and resuming there gets the change."""
    local = LocalProvider()
    session_id = local.create_session()
    head = local.register_variable(session_id, "t", FLOAT, 0.0).revision
    server = StoreServer.start(local, "127.0.0.1:0")
    client = SessionStoreProvider(server.address)
    try:
        with client.watch_variables(session_id, linger=1.0) as watch:
            local.set_variable(session_id, "t", 0.5)  # held for a second
            time.sleep(0.1)
            server.stop(grace=0.3)
            with pytest.raises(StoreUnavailableError, match="shutting down") as raised:
                watch.poll(timeout=10)
        assert raised.value.resume_from == head
    finally:
        client.close()
        server.stop(grace=0)
    with local.watch_variables(session_id, after_revision=head) as resumed:
        update = resumed.poll(timeout=5)
    assert update is not None and update.record.value == 0.5
