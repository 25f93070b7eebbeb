"""The store's side of the language-neutral protocol, seen by a client that uses only the
generated stubs and standard gRPC helpers, against a real ``dspex serve``: standard error
details, reflection v1, the bearer scheme, resume_from, read revisions, batch markers and the
canonical dtype spelling."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status
from support.serve_process import ServeProcess

from dspex import errors
from dspex._model import BatchMark, make_spec
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex._proto.bridge.v1 import store_pb2_grpc
from dspex.state.store import SessionStoreProvider

TOKEN = "protocol-token"
WAIT = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with ServeProcess("--token", TOKEN, "--log-size", "3") as process:
        yield process


@pytest.fixture
def stub(channel: grpc.Channel) -> Any:
    return store_pb2_grpc.SessionStoreStub(channel)


@pytest.fixture
def token() -> str:
    return TOKEN


def auth(scheme: str = "Bearer") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"{scheme} {TOKEN}"),)


def error_info(error: grpc.RpcError) -> tuple[Any, dict[str, Any]]:
    """The google.rpc.Status of a failed call (the standard helper) and its ErrorInfo details."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no grpc-status-details-bin"
    assert status.code == error.code().value[0]  # type: ignore[attr-defined]
    assert status.message == error.details()  # type: ignore[attr-defined]
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.domain == "dspex"
    return info, {key: json.loads(text) for key, text in info.metadata.items()}


def test_every_error_carries_a_standard_error_info(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetSession(pb.GetSessionRequest(session_id="nope"), metadata=auth(), timeout=WAIT)
    info, details = error_info(caught.value)
    assert info.reason == "session_not_found"
    assert details == {"session_id": "nope"}

    sid = stub.CreateSession(pb.CreateSessionRequest(), metadata=auth(), timeout=WAIT).session_id
    register = pb.RegisterVariableRequest(
        session_id=sid, name="t", type="float", constraints_json='{"max": 1}',
        value=pb.Value(json="0.5"),
    )  # fmt: skip
    stub.RegisterVariable(register, metadata=auth(), timeout=WAIT)
    bad = pb.SetVariableRequest(session_id=sid, name="t", value=pb.Value(json="5"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetVariable(bad, metadata=auth(), timeout=WAIT)
    info, details = error_info(caught.value)
    assert info.reason == "invalid_value"
    assert details == {"name": "t", "value": 5, "rule": "max=1"}

    with pytest.raises(grpc.RpcError) as caught:
        stub.Ping(pb.PingRequest(message="x"), timeout=WAIT)
    info, _ = error_info(caught.value)
    assert info.reason == "unauthenticated"
    assert "authorization: Bearer <token>" in caught.value.details()  # type: ignore[attr-defined]
    assert "token=" not in caught.value.details()  # type: ignore[attr-defined]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(stub: Any, scheme: str) -> None:
    pong = stub.Ping(pb.PingRequest(message="hi"), metadata=auth(scheme), timeout=WAIT)
    assert pong.message == "hi"


def test_other_schemes_are_refused(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Ping(pb.PingRequest(message="x"), metadata=auth("Basic"), timeout=WAIT)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_serves_both_versions_with_the_repository_file_names(
    channel: grpc.Channel, version: str
) -> None:
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="dspex.bridge.v1.SessionStore"
        ),
    ]
    listed, found = list(call(iter(requests), timeout=WAIT))
    names = {s.name for s in listed.list_services_response.service}
    assert {"dspex.bridge.v1.SessionStore", "dspex.bridge.v1.ToolStore"} <= names
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= (
        names
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    assert "dspex/bridge/v1/store.proto" in {f.name for f in files}


def test_resume_from_is_the_earliest_revision_the_store_can_resume(
    client: SessionStoreProvider,
) -> None:
    sid = client.create_session()
    client.register_variable(sid, "n", make_spec(int), 0)
    for value in range(1, 7):  # revisions 2..7; the server keeps the last 3 changes
        client.set_variable(sid, "n", value)
    with pytest.raises(errors.WatchLaggedError) as caught:
        client.watch_variables(sid, after_revision=1)
    assert caught.value.resume_from == 4  # changes 5, 6, 7 are kept
    with client.watch_variables(sid, after_revision=caught.value.resume_from) as watch:
        replayed = [watch.poll(WAIT) for _ in range(3)]
    assert [u.revision for u in replayed if u is not None] == [5, 6, 7]
    with pytest.raises(errors.WatchLaggedError) as future:
        client.watch_variables(sid, after_revision=99)
    assert future.value.resume_from == 4


def test_get_variables_reports_the_revision_it_read_at(stub: Any) -> None:
    sid = stub.CreateSession(pb.CreateSessionRequest(), metadata=auth(), timeout=WAIT).session_id
    for name in ("a", "b"):
        register = pb.RegisterVariableRequest(
            session_id=sid, name=name, type="integer", value=pb.Value(json="1")
        )
        stub.RegisterVariable(register, metadata=auth(), timeout=WAIT)
    stub.DeleteVariable(pb.DeleteVariableRequest(session_id=sid, name="a"), metadata=auth())
    read = stub.GetVariables(pb.GetVariablesRequest(session_id=sid, names=["b"]), metadata=auth())
    assert [v.revision for v in read.variables] == [2]
    assert read.revision == 3  # the delete came after b was written


def test_atomic_batches_are_marked_on_watch_streams(client: SessionStoreProvider) -> None:
    sid = client.create_session()
    for name in ("x", "y", "z"):
        client.register_variable(sid, name, make_spec(int), 0)
    with (
        client.watch_variables(sid) as everything,
        client.watch_variables(sid, ["x", "y"]) as some,
    ):
        client.set_variable(sid, "x", 1)  # a single write: no mark
        client.update_variables(sid, {"x": 2, "y": 2, "z": 2}, atomic=True)
        seen = [everything.poll(WAIT) for _ in range(4)]
        filtered = [some.poll(WAIT) for _ in range(3)]
    assert [u.batch if u else "missing" for u in seen] == [
        None,
        BatchMark(5, 7, False),
        BatchMark(5, 7, False),
        BatchMark(5, 7, True),
    ]
    assert [u.batch.end if u and u.batch else None for u in filtered] == [None, False, True]


def test_arrays_use_the_canonical_dtype_names(stub: Any) -> None:
    sid = stub.CreateSession(pb.CreateSessionRequest(), metadata=auth(), timeout=WAIT).session_id

    def register(name: str, dtype: str) -> Any:
        array = pb.Array(dtype=dtype, shape=[2], data=b"\0" * 16)
        request = pb.RegisterVariableRequest(
            session_id=sid, name=name, type="tensor", value=pb.Value(array=array)
        )
        return stub.RegisterVariable(request, metadata=auth(), timeout=WAIT).variable

    assert register("canonical", "float64").value.array.dtype == "float64"
    assert register("legacy", "<f8").value.array.dtype == "float64"  # older clients
    with pytest.raises(grpc.RpcError) as caught:
        register("numpy_letter", "d")
    info, _ = error_info(caught.value)
    assert info.reason == "invalid_value"
    assert "canonical dtype name" in caught.value.details()  # type: ignore[attr-defined]
