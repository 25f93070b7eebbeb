"""Many sessions (issue 12, item 6): ``ListSessions`` answers in bounded pages, and both the
client and ``dspex sessions list`` follow the pages to the end, oldest session first.
"""

from __future__ import annotations

import json

import grpc
import pytest
from support.serve_process import ServeProcess, run_dspex

from dspex import errors
from dspex._proto.bridge.v1 import store_pb2, store_pb2_grpc
from dspex.state.store import SessionStoreProvider

SESSIONS = 2_300
PAGE = 1000  # the server's largest page


def test_list_sessions_is_paginated_and_followed() -> None:
    with ServeProcess() as server:
        client = SessionStoreProvider(server.address, timeout=30.0)
        channel = grpc.insecure_channel(server.address.removeprefix("grpc://"))
        try:
            created = [client.create_session(f"s-{i:05d}") for i in range(SESSIONS)]
            stub = store_pb2_grpc.SessionStoreStub(channel)
            first = stub.ListSessions(store_pb2.ListSessionsRequest())
            assert len(first.sessions) == PAGE and first.next_page_token
            small = stub.ListSessions(store_pb2.ListSessionsRequest(page_size=7))
            assert [s.session_id for s in small.sessions] == created[:7]
            with pytest.raises(grpc.RpcError) as bad:
                stub.ListSessions(store_pb2.ListSessionsRequest(page_token="garbage"))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [s.session_id for s in client.list_sessions()] == created
            with pytest.raises(errors.StoreProtocolError, match="page_token"):
                client._call("ListSessions", store_pb2.ListSessionsRequest(page_token="garbage"))
        finally:
            channel.close()
            client.close()
        listed = run_dspex("sessions", "list", "--store", server.address, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [s["session_id"] for s in json.loads(listed.stdout)] == created
