"""Watch over the wire: resume, lag, heartbeats, disconnects and shutdown."""

from __future__ import annotations

import multiprocessing

import grpc
import pytest
from support import wait_until
from support.bridge import FLOAT, WAIT, child_hold_watches, raw_stub, served

import dspex.errors as errors
from dspex._model import make_spec
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex.state import LocalProvider
from dspex.state.store import SessionStoreProvider, StoreServer
from dspex.state.wire import status as _status


def test_watch_resumes_from_a_revision_with_no_gap_or_duplicate(
    client: SessionStoreProvider, session_id: str
) -> None:
    revisions = [client.set_variable(session_id, "t", step / 10).revision for step in range(5)]
    with client.watch_variables(session_id, after_revision=revisions[1]) as watch:
        client.set_variable(session_id, "t", 1.0)
        got = [watch.poll(WAIT) for _ in range(4)]
        assert watch.poll(0.2) is None
    assert [u.revision for u in got if u is not None] == [*revisions[2:], revisions[-1] + 1]


def test_server_side_lag_ends_the_stream_with_resume_from_and_resuming_loses_nothing() -> None:
    local = LocalProvider(watch_queue_size=4)
    session_id = local.create_session()
    local.register_variable(session_id, "big", make_spec(str), "")
    total = 200
    with served(local) as server, raw_stub(server.address) as stub:
        stream = stub.WatchVariables(pb.WatchVariablesRequest(session_id=session_id))
        first = next(stream)  # registered; now stop reading so the transport fills up
        assert first.WhichOneof("event") == "started"
        for step in range(total):
            local.set_variable(session_id, "big", f"{step:04d}" + "x" * 100_000)
        seen: list[int] = []
        with pytest.raises(grpc.RpcError) as caught:
            for message in stream:
                if message.WhichOneof("event") == "update":
                    seen.append(message.update.revision)
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
        trailing = dict(caught.value.trailing_metadata())
        assert trailing[_status.CODE_KEY] == "watch_lagged"
        assert f'"resume_from": {seen[-1]}' in trailing[_status.DETAILS_KEY]
        assert seen == list(range(2, seen[-1] + 1)) and len(seen) < total
        client = SessionStoreProvider(server.address)
        with client.watch_variables(session_id, after_revision=seen[-1]) as again:
            while len(seen) < total:
                update = again.poll(WAIT)
                assert update is not None
                seen.append(update.revision)
        client.close()
    assert seen == list(range(2, total + 2))


def test_client_side_lag_gives_the_same_error() -> None:
    slow = LocalProvider(watch_queue_size=3)
    with served(slow) as small:
        client = SessionStoreProvider(small.address)
        session_id = client.create_session()
        client.register_variable(session_id, "t", FLOAT, 0.0)
        with client.watch_variables(session_id) as watch:
            assert wait_until(lambda: small.watch_count == 1)
            for step in range(20):
                slow.set_variable(session_id, "t", step / 100)
            # Nobody reads: the client's queue overflows and it ends its own stream.
            assert wait_until(lambda: small.watch_count == 0)
            seen = []
            with pytest.raises(errors.WatchLaggedError) as caught:
                while (update := watch.poll(WAIT)) is not None:
                    seen.append(update.revision)
        assert caught.value.resume_from == seen[-1]
        client.close()


def test_idle_streams_get_heartbeats() -> None:
    local = LocalProvider()
    session_id = local.create_session()
    with (
        served(local, heartbeat_interval=0.2) as server,
        raw_stub(server.address) as stub,
    ):
        stream = stub.WatchVariables(pb.WatchVariablesRequest(session_id=session_id), timeout=WAIT)
        kinds = [next(stream).WhichOneof("event") for _ in range(3)]
        stream.cancel()
    assert kinds == ["started", "heartbeat", "heartbeat"]


def test_heartbeats_are_not_updates(client: SessionStoreProvider, session_id: str) -> None:
    with served(LocalProvider(), heartbeat_interval=0.1) as server:
        remote = SessionStoreProvider(server.address)
        sid = remote.create_session()
        with remote.watch_variables(sid) as watch:
            assert watch.poll(0.5) is None and not watch.closed
        remote.close()


def test_cancelled_and_disconnected_watches_are_cleaned_up(
    server: StoreServer, client: SessionStoreProvider, session_id: str
) -> None:
    # include_initial: a stream each (live watches of one client would share one stream)
    watches = [client.watch_variables(session_id, include_initial=True) for _ in range(3)]
    assert wait_until(lambda: server.watch_count == 3)
    watches[0].cancel()
    assert wait_until(lambda: server.watch_count == 2)
    with raw_stub(server.address) as stub:
        stream = stub.WatchVariables(pb.WatchVariablesRequest(session_id=session_id))
        next(stream)
        assert wait_until(lambda: server.watch_count == 3)
    assert wait_until(lambda: server.watch_count == 2)  # channel closed mid-stream
    client.close()
    assert wait_until(lambda: server.watch_count == 0)
    other = SessionStoreProvider(server.address)
    assert other.set_variable(session_id, "t", 0.2).version == 2  # still serving everyone
    other.close()


def test_a_killed_client_process_frees_its_watches(server: StoreServer, session_id: str) -> None:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=child_hold_watches, args=(server.address, session_id, 5, child), daemon=True
    )
    process.start()
    try:
        assert parent.poll(60) and parent.recv() == 5
        assert wait_until(lambda: server.watch_count == 5)
    finally:
        process.kill()
        process.join(10)
    assert wait_until(lambda: server.watch_count == 0)


def test_shutdown_ends_watches_with_resume_from_and_a_restart_resumes(
    local: LocalProvider,
) -> None:
    session_id = local.create_session()
    local.register_variable(session_id, "t", FLOAT, 0.0)
    server = StoreServer.start(local, "127.0.0.1:0")
    address = server.address
    client = SessionStoreProvider(address)
    watch = client.watch_variables(session_id)
    local.set_variable(session_id, "t", 0.5)
    assert watch.poll(WAIT) is not None
    server.stop(grace=0.5)
    with pytest.raises(errors.StoreUnavailableError) as caught:
        watch.poll(WAIT)
    resume_from = caught.value.resume_from
    assert resume_from == 2
    local.set_variable(session_id, "t", 0.75)  # written while the server is down
    with served(local, address.removeprefix("grpc://")):
        assert wait_until(lambda: _resumes(client, session_id, resume_from))
        with client.watch_variables(session_id, after_revision=resume_from) as again:
            update = again.poll(WAIT)
        assert update is not None and (update.revision, update.record.value) == (3, 0.75)
    client.close()


def _resumes(client: SessionStoreProvider, session_id: str, after: int) -> bool:
    try:
        client.watch_variables(session_id, after_revision=after).cancel()
    except errors.StoreUnavailableError:
        return False
    return True


def test_closing_the_session_ends_remote_watches_normally(
    local: LocalProvider, client: SessionStoreProvider, session_id: str
) -> None:
    with client.watch_variables(session_id) as watch:
        local.close_session(session_id)
        assert wait_until(lambda: watch.poll(0.05) is None and watch.closed)
