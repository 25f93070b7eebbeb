"""Bad input at the wire: each gets a clear error, nothing is half applied, others keep working."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from support.bridge import FLOAT, raw_stub, served

import dspex.errors as errors
from dspex._model import make_spec
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex.state import LocalProvider
from dspex.state.store import SessionStoreProvider, StoreServer
from dspex.state.wire import status as _status

MAX_MESSAGE = 1024 * 1024
MAX_VALUE = 64 * 1024


@pytest.fixture(name="small")
def _small(local: LocalProvider) -> Iterator[StoreServer]:
    with served(local, max_message_bytes=MAX_MESSAGE, max_value_bytes=MAX_VALUE) as server:
        yield server


@pytest.fixture(name="sid")
def _sid(local: LocalProvider) -> str:
    session_id = local.create_session()
    local.register_variable(session_id, "t", FLOAT, 0.7)
    local.register_variable(session_id, "arr", make_spec("tensor", dtype="float64"), [0.0, 1.0])
    return session_id


@pytest.fixture(name="stub")
def _stub(small: StoreServer) -> Iterator[Any]:
    with raw_stub(small.address) as stub:
        yield stub


def _refused(call: Any, status: grpc.StatusCode, code: str | None) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == status, caught.value.details()
    trailing = dict(caught.value.trailing_metadata() or ())
    assert trailing.get(_status.CODE_KEY) == code
    return str(caught.value.details())


def _set(stub: Any, sid: str, value: Any, name: str = "t") -> Any:
    return lambda: stub.SetVariable(pb.SetVariableRequest(session_id=sid, name=name, value=value))


@pytest.fixture(autouse=True)
def _nothing_half_applied(local: LocalProvider, sid: str, small: StoreServer) -> Iterator[None]:
    """After each bad request: the session is unchanged and the server serves another client."""
    before = local.get_session(sid).revision
    yield
    assert local.get_session(sid).revision == before
    other = SessionStoreProvider(small.address)
    assert other.set_variable(sid, "t", 0.1).version == 2
    other.close()


def test_value_missing_is_a_malformed_request(stub: Any, sid: str) -> None:
    details = _refused(
        _set(stub, sid, pb.Value()), grpc.StatusCode.INVALID_ARGUMENT, "store_protocol"
    )
    assert "no value" in details


def test_unknown_and_empty_sessions(stub: Any, sid: str) -> None:
    for session_id in ("nope", ""):
        _refused(
            _set(stub, session_id, pb.Value(json="0.5")),
            grpc.StatusCode.NOT_FOUND,
            "session_not_found",
        )
    _refused(
        lambda: stub.WatchVariables(pb.WatchVariablesRequest(session_id="nope")).next(),
        grpc.StatusCode.NOT_FOUND,
        "session_not_found",
    )


def test_invalid_json(stub: Any, sid: str) -> None:
    details = _refused(
        _set(stub, sid, pb.Value(json="{not json")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_value",
    )
    assert "not valid JSON" in details and "'t'" in details


def test_oversized_value_is_refused_with_the_limit(
    stub: Any, sid: str, small: StoreServer
) -> None:
    big = '"' + "x" * (MAX_VALUE + 10) + '"'
    details = _refused(
        _set(stub, sid, pb.Value(json=big)), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit_exceeded"
    )
    assert str(MAX_VALUE) in details
    client = SessionStoreProvider(small.address)
    with pytest.raises(errors.LimitExceededError):
        client.register_variable(sid, "huge", make_spec(str), "y" * (MAX_VALUE + 1))
    client.close()


def test_oversized_request_is_refused_by_the_transport(small: StoreServer, sid: str) -> None:
    client = SessionStoreProvider(small.address)
    with pytest.raises(errors.LimitExceededError):
        client.update_variables(sid, {f"v{i}": "z" * 60_000 for i in range(40)})
    client.close()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (pb.Array(dtype="<f8", shape=[3], data=b"\0" * 16), "need 24 bytes"),
        (pb.Array(dtype="<f8", shape=[2], data=b"\0" * 17), "need 16 bytes"),
        (pb.Array(dtype="|O", shape=[1], data=b"\0" * 8), "not a numeric array"),
        (pb.Array(dtype="nonsense", shape=[1], data=b"\0"), "not a numpy dtype"),
        (pb.Array(dtype="<f8", shape=[-2], data=b""), "not a numeric array"),
        (pb.Array(dtype="<f8", shape=[2**62, 0], data=b""), "not a usable numpy shape"),
    ],
)
def test_array_bytes_that_disagree_with_shape_or_dtype(
    stub: Any, sid: str, array: Any, message: str
) -> None:
    details = _refused(
        _set(stub, sid, pb.Value(array=array), name="arr"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_value",
    )
    assert message in details


def test_a_batch_naming_a_variable_twice_applies_nothing(stub: Any, sid: str) -> None:
    entries = [
        pb.NamedValue(name="t", value=pb.Value(json="0.2")),
        pb.NamedValue(name="t", value=pb.Value(json="0.3")),
    ]
    request = pb.UpdateVariablesRequest(session_id=sid, values=entries, atomic=False)
    _refused(
        lambda: stub.UpdateVariables(request), grpc.StatusCode.INVALID_ARGUMENT, "store_protocol"
    )


def test_a_batch_with_one_undecodable_value_applies_nothing(stub: Any, sid: str) -> None:
    entries = [
        pb.NamedValue(name="t", value=pb.Value(json="0.2")),
        pb.NamedValue(name="arr", value=pb.Value(json="[1, ")),
    ]
    request = pb.UpdateVariablesRequest(session_id=sid, values=entries, atomic=False)
    _refused(
        lambda: stub.UpdateVariables(request), grpc.StatusCode.INVALID_ARGUMENT, "invalid_value"
    )


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"type": "float", "constraints_json": "{bad"}, "invalid_constraint"),
        ({"type": "float", "constraints_json": "[1]"}, "invalid_constraint"),
        ({"type": "float", "constraints_json": '{"nope": 1}'}, "invalid_constraint"),
        ({"type": "string", "constraints_json": '{"pattern": "("}'}, "invalid_pattern"),
        ({"type": "quaternion", "constraints_json": "{}"}, "invalid_constraint"),
        ({"type": "float", "constraints_json": "{}", "metadata_json": "{x"}, "invalid_value"),
        ({"type": "float", "constraints_json": "{}", "name": "x" * 300}, "invalid_value"),
    ],
)
def test_bad_registrations(stub: Any, sid: str, fields: dict[str, str], code: str) -> None:
    request = pb.RegisterVariableRequest(
        session_id=sid, name=fields.pop("name", "new"), value=pb.Value(json="1.0"), **fields
    )
    _refused(lambda: stub.RegisterVariable(request), grpc.StatusCode.INVALID_ARGUMENT, code)


def test_bytes_that_are_not_a_message(small: StoreServer, sid: str) -> None:
    channel = grpc.insecure_channel(small.address.removeprefix("grpc://"))
    garbage = channel.unary_unary("/dspex.bridge.v1.SessionStore/SetVariable")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            garbage(b"\xff\xff\xff\xff", timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(caught.value.trailing_metadata())[_status.CODE_KEY] == "store_protocol"
        assert "not a SetVariableRequest" in str(caught.value.details())
        unknown = channel.unary_unary("/dspex.bridge.v1.SessionStore/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as missing:
            unknown(b"", timeout=10)
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        channel.close()


def test_client_side_values_that_cannot_travel(small: StoreServer, sid: str) -> None:
    client = SessionStoreProvider(small.address)
    with pytest.raises(errors.VariableTypeError, match="cannot be sent"):
        client.set_variable(sid, "t", object())
    with pytest.raises(errors.VariableValueError):
        client.set_variable(sid, "t", float("nan"))  # travels, and the store refuses it
    client.close()
