"""The error <-> status table: total, stable, and round-tripped through a real server."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from support.bridge import FLOAT

import dspex.errors as errors
from dspex._model import make_spec
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex._proto.bridge.v1 import store_pb2_grpc as pb_grpc
from dspex.state import LocalProvider
from dspex.state.store import SessionStoreProvider, StoreServer
from dspex.state.wire import status as _status


def _all_error_classes() -> list[type[errors.DspexError]]:
    found: list[type[errors.DspexError]] = []
    pending = [errors.DspexError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_status_table_covers_every_dspex_error() -> None:
    missing = [cls.__name__ for cls in _all_error_classes() if cls not in _status.STATUS_TABLE]
    assert missing == [], f"add these to STATUS_TABLE in state/wire/status.py: {missing}"


def test_every_wire_code_is_unique_and_rebuilds_its_class() -> None:
    classes = _all_error_classes()
    assert len({cls.code for cls in classes}) == len(classes)
    for cls in classes:
        rebuilt = _status.error_from_code(cls.code, "msg", '{"name": "x"}')
        assert type(rebuilt) is cls
        assert (
            rebuilt is not None and rebuilt.message == "msg" and rebuilt.details == {"name": "x"}
        )


def test_transport_statuses_mean_unavailable_and_unknown_ones_protocol() -> None:
    class Failed(grpc.RpcError):
        def __init__(self, status: grpc.StatusCode) -> None:
            self._status = status

        def code(self) -> grpc.StatusCode:
            return self._status

        def details(self) -> str:
            return "boom"

        def trailing_metadata(self) -> tuple[()]:
            return ()

    for status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        error = _status.error_from_rpc(Failed(status), "grpc://h:1")
        assert type(error) is errors.StoreUnavailableError and "grpc://h:1" in str(error)
    resource = _status.error_from_rpc(Failed(grpc.StatusCode.RESOURCE_EXHAUSTED), "a")
    assert type(resource) is errors.LimitExceededError
    unknown = _status.error_from_rpc(Failed(grpc.StatusCode.UNIMPLEMENTED), "a")
    assert type(unknown) is errors.StoreProtocolError


def test_errors_cross_the_wire_as_the_same_class_with_details(
    client: SessionStoreProvider, session_id: str
) -> None:
    cases = [
        (lambda: client.get_variable(session_id, "nope"), errors.VariableNotFoundError),
        (lambda: client.get_session("nope"), errors.SessionNotFoundError),
        (lambda: client.set_variable(session_id, "t", 9.0), errors.VariableValueError),
        (lambda: client.set_variable(session_id, "t", "x"), errors.VariableTypeError),
        (
            lambda: client.set_variable(session_id, "t", 0.1, expected_version=7),
            errors.VersionConflictError,
        ),
        (
            lambda: client.register_variable(session_id, "t", make_spec(int), 1),
            errors.VariableExistsError,
        ),
        (lambda: client.rollback_variable(session_id, "t", 99), errors.VersionNotFoundError),
        (
            lambda: client.watch_variables(session_id, after_revision=10_000),
            errors.WatchLaggedError,
        ),
    ]
    for call, expected in cases:
        with pytest.raises(expected) as caught:
            call()
        assert type(caught.value) is expected, (type(caught.value), expected)
    with pytest.raises(errors.VersionConflictError) as conflict:
        client.set_variable(session_id, "t", 0.1, expected_version=7)
    assert conflict.value.version == 1 and conflict.value.expected_version == 7
    with pytest.raises(errors.WatchLaggedError) as lagged:
        client.watch_variables(session_id, after_revision=10_000)
    assert lagged.value.resume_from == 0  # the earliest revision it can resume from


def test_closed_session_is_reported_as_closed(client: SessionStoreProvider) -> None:
    session_id = client.create_session()
    client.close_session(session_id)
    with pytest.raises(errors.SessionClosedError):
        client.get_variable(session_id, "t")
    with pytest.raises(errors.SessionClosedError):
        client.close_session(session_id)


def test_status_code_and_metadata_on_the_wire(server: StoreServer, session_id: str) -> None:
    channel = grpc.insecure_channel(server.address.removeprefix("grpc://"))
    stub = pb_grpc.SessionStoreStub(channel)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetVariable(pb.GetVariableRequest(session_id=session_id, name="nope"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        trailing = dict(caught.value.trailing_metadata())
        assert trailing[_status.CODE_KEY] == "variable_not_found"
        value = pb.Value(json="9.5")
        with pytest.raises(grpc.RpcError) as bad:
            stub.SetVariable(pb.SetVariableRequest(session_id=session_id, name="t", value=value))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(bad.value.trailing_metadata())[_status.CODE_KEY] == "invalid_value"
    finally:
        channel.close()


def test_unreachable_store_raises_store_unavailable() -> None:
    client = SessionStoreProvider("grpc://127.0.0.1:1", timeout=5)
    try:
        with pytest.raises(errors.StoreUnavailableError) as caught:
            client.create_session()
        assert "127.0.0.1:1" in str(caught.value) and "dspex serve" in str(caught.value)
        assert isinstance(caught.value, ConnectionError)
        with pytest.raises(errors.StoreUnavailableError):
            client.watch_variables("any")
    finally:
        client.close()


def test_token_is_required_when_the_server_has_one() -> None:
    local = LocalProvider()
    server = StoreServer.start(local, "127.0.0.1:0", token="s3cret")
    try:
        anonymous = SessionStoreProvider(server.address)
        wrong = SessionStoreProvider(server.address, token="nope")
        right = SessionStoreProvider(server.address, token="s3cret")
        for client in (anonymous, wrong):
            with pytest.raises(errors.UnauthenticatedError):
                client.create_session()
            with pytest.raises(errors.UnauthenticatedError):
                client.watch_variables("any")
        session_id = right.create_session()
        right.register_variable(session_id, "a", make_spec("tensor"), np.arange(3))
        with right.watch_variables(session_id) as watch:
            right.set_variable(session_id, "a", np.arange(4))
            update = watch.poll(10)
        assert update is not None and update.record.value.tolist() == [0, 1, 2, 3]
        assert local.list_sessions()[0].session_id == session_id  # nothing else was created
        for client in (anonymous, wrong, right):
            client.close()
    finally:
        server.stop()


def test_float_spec_survives_the_wire(client: SessionStoreProvider, session_id: str) -> None:
    record = client.get_variable(session_id, "t")
    assert record.spec == FLOAT


def test_a_call_on_a_closed_aio_channel_says_its_client_was_closed() -> None:
    """grpc.aio refuses it with ``UsageError`` (not an RpcError); before, a stream started so
    (a watch racing ``close()``) ended as "a bug ... please report it"."""

    async def call_on_closed_channel() -> None:
        channel = grpc.aio.insecure_channel("127.0.0.1:1")
        await channel.close()
        with _status.translate_rpc_errors("grpc://127.0.0.1:1"):
            await pb_grpc.SessionStoreStub(channel).Ping(pb.PingRequest())

    with pytest.raises(errors.StoreUnavailableError) as closed:
        asyncio.run(call_on_closed_channel())
    assert closed.value.details["closed"] is True
    assert "was closed" in str(closed.value)
