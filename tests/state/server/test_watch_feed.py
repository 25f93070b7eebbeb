"""The shared session feed behind watch streams: one log per session, a cursor per stream.

A stream that stops reading falls behind the shared log and ends with ``watch_lagged`` whose
``resume_from`` works, while the other streams of the session carry on with every update.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from support.bridge import WAIT, raw_stub, served

from dspex._model import make_spec
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex.state import LocalProvider
from dspex.state.server.streams import COALESCED_BYTES
from dspex.state.store import SessionStoreProvider
from dspex.state.wire import status as _status

TOTAL = 300
"""Sets of a large value: far more than the transport and the feed hold for a stalled stream."""


def _read_all(stream: object, into: list[int], until: int) -> None:
    """Read update revisions from a raw stream until ``until`` arrives."""
    for message in stream:  # type: ignore[attr-defined]
        if message.WhichOneof("event") == "update":
            into.append(message.update.revision)
            if message.update.revision >= until:
                return


@pytest.mark.timeout(120)
def test_a_stalled_stream_lags_on_the_shared_log_while_the_others_get_everything() -> None:
    local = LocalProvider(watch_queue_size=64)
    session_id = local.create_session()
    first = local.register_variable(session_id, "big", make_spec(str), "").revision
    last = first + TOTAL
    request = pb.WatchVariablesRequest(session_id=session_id)
    with (
        served(local) as server,
        raw_stub(server.address) as stub,
        raw_stub(server.address) as other,
    ):
        stalled = stub.WatchVariables(request)
        assert next(stalled).WhichOneof("event") == "started"  # then it stops reading
        reading = other.WatchVariables(request)
        assert next(reading).WhichOneof("event") == "started"
        fast: list[int] = []
        reader = threading.Thread(target=_read_all, args=(reading, fast, last), daemon=True)
        reader.start()
        for step in range(TOTAL):
            local.set_variable(session_id, "big", f"{step:04d}" + "x" * 50_000)
            time.sleep(0.005)  # paced: a stream that reads keeps up
        reader.join(WAIT * 6)
        assert fast == list(range(first + 1, last + 1))  # every update, in order, no lag
        slow: list[int] = []
        with pytest.raises(grpc.RpcError) as caught:
            _read_all(stalled, slow, last)
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
        trailing = dict(caught.value.trailing_metadata())
        assert trailing[_status.CODE_KEY] == "watch_lagged"
        resume_from = slow[-1] if slow else first
        assert f'"resume_from": {resume_from}' in trailing[_status.DETAILS_KEY]
        assert slow == list(range(first + 1, resume_from + 1)) and resume_from < last
        client = SessionStoreProvider(server.address)
        try:
            with client.watch_variables(session_id, after_revision=resume_from) as again:
                while not slow or slow[-1] < last:
                    update = again.poll(WAIT)
                    assert update is not None
                    slow.append(update.revision)
        finally:
            client.close()
    assert slow == list(range(first + 1, last + 1))


def _revisions(stream: object, until: int) -> tuple[list[int], list[int], list[int]]:
    """(update revisions, updates per message, bytes per message) read from a raw stream
    until ``until``."""
    revisions: list[int] = []
    sizes: list[int] = []
    weights: list[int] = []
    for message in stream:  # type: ignore[attr-defined]
        event = message.WhichOneof("event")
        if event == "update":
            updates = [message.update]
        elif event == "updates":
            updates = list(message.updates.updates)
        else:
            continue
        revisions.extend(u.revision for u in updates)
        sizes.append(len(updates))
        weights.append(message.ByteSize())
        if revisions[-1] >= until:
            break
    return revisions, sizes, weights


@pytest.mark.timeout(60)
def test_a_stream_that_asks_to_coalesce_gets_a_burst_in_few_messages_in_order() -> None:
    local = LocalProvider()
    session_id = local.create_session()
    names = [f"v{i:03d}" for i in range(200)]
    for name in names:
        local.register_variable(session_id, name, make_spec(int), 0)
    big = local.register_variable(session_id, "big", make_spec(str), "").revision
    head = big
    with served(local) as server, raw_stub(server.address) as stub:
        plain = stub.WatchVariables(pb.WatchVariablesRequest(session_id=session_id))
        packed = stub.WatchVariables(
            pb.WatchVariablesRequest(session_id=session_id, coalesce=True)
        )
        for stream in (plain, packed):
            assert next(stream).WhichOneof("event") == "started"
        local.update_variables(session_id, dict.fromkeys(names, 1), atomic=True)  # 200 at once
        head += len(names)
        for step in range(6):  # 6 x 300 KB: more than one message may carry
            local.set_variable(session_id, "big", f"{step}" + "x" * 300_000)
        head += 6
        want = list(range(big + 1, head + 1))
        plain_revisions, plain_sizes, _ = _revisions(plain, head)
        packed_revisions, packed_sizes, packed_bytes = _revisions(packed, head)
    assert plain_revisions == want and set(plain_sizes) == {1}  # never coalesced unasked
    assert packed_revisions == want  # every update, in order
    assert len(packed_sizes) < len(want) // 10  # the burst came in a few messages
    assert max(packed_sizes) > 1
    # at most 1 MiB beyond a message's first update: the six big values never share one
    assert max(packed_bytes) <= COALESCED_BYTES + 301_000 and len(packed_sizes) >= 2
