"""The ToolStore service on the wire: bad bytes and unknown sessions get documented statuses
with the dspex error code, never UNKNOWN or INTERNAL (a raw gRPC client, no dspex client)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from dspex._proto.bridge.v1 import tools_pb2 as pb
from dspex.state.store import StoreServer

SERVICE = pb.DESCRIPTOR.services_by_name["ToolStore"]
METHODS = [method.name for method in SERVICE.methods]


@pytest.fixture
def channel(store: StoreServer) -> Iterator[grpc.Channel]:
    opened = grpc.insecure_channel(store.address.removeprefix("grpc://"))
    yield opened
    opened.close()


def _invoke(channel: grpc.Channel, method: str, payload: bytes) -> Any:
    path = f"/{SERVICE.full_name}/{method}"
    if SERVICE.methods_by_name[method].server_streaming:
        return list(channel.unary_stream(path)(payload, timeout=30))
    return channel.unary_unary(path)(payload, timeout=30)


def _code(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("dspex-error-code", "")


def test_every_rpc_is_served() -> None:
    assert METHODS == [
        "RegisterTool",
        "UnregisterTools",
        "ListTools",
        "CallTool",
        "ServeTools",
        "ReturnToolResult",
    ]


@pytest.mark.parametrize("method", METHODS)
def test_undecodable_bytes_are_invalid_argument(channel: grpc.Channel, method: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _invoke(channel, method, b"\xff\xff\xff\xff")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(caught.value) == "store_protocol"


def _request_for(method: str) -> bytes:
    request_class = getattr(pb, SERVICE.methods_by_name[method].input_type.name)
    fields = {"session_id": "no-such-session"}
    names = {field.name for field in request_class.DESCRIPTOR.fields}
    if "owner_id" in names:
        fields["owner_id"] = "someone"
    if "spec" in names:
        return bytes(request_class(spec=pb.ToolSpec(name="t"), **fields).SerializeToString())
    return bytes(request_class(**fields).SerializeToString())


@pytest.mark.parametrize("method", METHODS)
def test_an_unknown_session_is_not_found(channel: grpc.Channel, method: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _invoke(channel, method, _request_for(method))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert _code(caught.value) == "session_not_found"


def test_an_empty_owner_id_is_refused(channel: grpc.Channel) -> None:
    request = pb.ServeToolsRequest(session_id="s", owner_id="").SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        _invoke(channel, "ServeTools", request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "owner_id is empty" in (caught.value.details() or "")
