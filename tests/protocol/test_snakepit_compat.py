"""``dspex serve --snakepit-compat``: the original bridge protocol, used the way the original
Python SessionContext used it, over the same sessions as dspex's own protocol."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from snakepit_client import WAIT, SnakepitContext, VariableNotFoundError, encode
from support.serve_process import ServeProcess

from dspex._model import make_spec
from dspex._proto.snakepit import snakepit_bridge_pb2 as sp
from dspex.state.store import SessionStoreProvider


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with ServeProcess("--snakepit-compat", "--heartbeat", "0.5") as process:
        yield process


_counter = iter(range(1_000_000))


@pytest.fixture
def ctx(channel: grpc.Channel) -> SnakepitContext:
    session_id = f"snakepit-{next(_counter)}-{time.monotonic_ns()}"
    context = SnakepitContext(channel, session_id)
    request = sp.InitializeSessionRequest(session_id=session_id, metadata={"elixir_node": "t"})
    assert context.stub.InitializeSession(request, timeout=WAIT).success
    return context


def fails(call: Any, status: grpc.StatusCode, text: str) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == status, caught.value.details()  # type: ignore[attr-defined]
    details = str(caught.value.details())  # type: ignore[attr-defined]
    assert text in details
    return details


def test_sessions_and_heartbeat(ctx: SnakepitContext) -> None:
    again = sp.InitializeSessionRequest(session_id=ctx.session_id)
    fails(
        lambda: ctx.stub.InitializeSession(again, timeout=WAIT),
        grpc.StatusCode.ALREADY_EXISTS,
        f"Session already exists: {ctx.session_id}",
    )
    ctx.register_variable("a", "integer", 1)
    info = ctx.stub.GetSession(sp.GetSessionRequest(session_id=ctx.session_id), timeout=WAIT)
    assert (info.variable_count, dict(info.metadata)) == (1, {"elixir_node": "t"})
    assert abs(info.created_at.seconds - time.time()) < 60  # wall clock, not monotonic
    assert ctx.heartbeat()
    cleanup = sp.CleanupSessionRequest(session_id=ctx.session_id)
    assert ctx.stub.CleanupSession(cleanup, timeout=WAIT).resources_cleaned == 1
    assert not ctx.heartbeat()
    fails(
        lambda: ctx.stub.GetSession(sp.GetSessionRequest(session_id=ctx.session_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        f"Session not found: {ctx.session_id}",
    )
    pong = ctx.stub.Ping(sp.PingRequest(message="hi"), timeout=WAIT)
    assert pong.message == "pong: hi"


def test_register_get_set_with_ids_versions_and_constraints(ctx: SnakepitContext) -> None:
    var_id = ctx.register_variable("temperature", "float", 0.7, {"min": 0.0, "max": 1.0})
    assert var_id == "var_temperature"
    assert ctx.get_variable("temperature") == ctx.get_variable(var_id) == 0.7
    assert ctx.get_record("temperature").version == 0  # versions count from 0, as there
    assert ctx.update_variable("temperature", 0.9) == 1
    details = fails(
        lambda: ctx.update_variable("temperature", 1.5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "value 1.5 is above maximum 1.0",
    )
    assert "max=1.0" in details  # dspex's own explanation follows
    ctx.register_variable("name", "string", "xaby", {"pattern": "ab", "max_length": 8})
    ctx.update_variable("name", "abc")  # the pattern matches anywhere, as there
    fails(lambda: ctx.update_variable("name", "xyz"), grpc.StatusCode.INVALID_ARGUMENT, "match")
    assert ctx.list_variables("name")[0]["constraints"] == {"pattern": "ab", "max_length": 8}
    with pytest.raises(VariableNotFoundError):
        ctx.get_variable("nope")
    # expected_version: 0 means "no check" (proto3), metadata states any version.
    fails(
        lambda: ctx.update_variable("temperature", 0.1, expected_version=7),
        grpc.StatusCode.ABORTED,
        "version",
    )
    ctx.update_variable("temperature", 0.2, metadata={"expected_version": "1"})


def test_every_type_round_trips(ctx: SnakepitContext) -> None:
    values: dict[str, tuple[str, Any, dict[str, Any]]] = {
        "f": ("float", 1.5, {}),
        "i": ("integer", 3, {"min": 0}),
        "s": ("string", "hi", {"enum": ["hi", "ho"]}),
        "b": ("boolean", True, {}),
        "c": ("choice", "x", {"choices": ["x", "y"]}),
        "m": ("module", "Predict", {"allowed_modules": ["Predict", "ChainOfThought"]}),
        "e": ("embedding", [0.5, 0.25], {}),
        "t": ("tensor", {"shape": [2, 2], "data": [[1.0, 2.0], [3.0, 4.0]]}, {"shape": [2, 2]}),
    }
    for name, (type_name, value, constraints) in values.items():
        ctx.register_variable(name, type_name, value, constraints)
        assert ctx.get_variable(name) == value, name
    ctx.update_variable("b", "false")  # the original accepted "true"/"false" and 1/0
    assert ctx.get_variable("b") is False
    fails(lambda: ctx.update_variable("c", "z"), grpc.StatusCode.INVALID_ARGUMENT, "one of")


def test_binary_values_are_read_without_running_code(ctx: SnakepitContext) -> None:
    payload = pickle.dumps([0.5, 1.5, 2.5], protocol=pickle.HIGHEST_PROTOCOL)
    meta = {"shape": [3], "dtype": "float32", "binary_format": "pickle", "type": "embedding"}
    request = sp.RegisterVariableRequest(
        session_id=ctx.session_id,
        name="emb",
        type="embedding",
        initial_value=any_pb2.Any(
            type_url="type.googleapis.com/snakepit.embedding.binary",
            value=json.dumps(meta).encode(),
        ),
        initial_binary_value=payload,
    )
    assert ctx.stub.RegisterVariable(request, timeout=WAIT).success
    assert ctx.get_variable("emb") == [0.5, 1.5, 2.5]  # answered as JSON
    request.name, request.initial_binary_value = "evil", pickle.dumps(time.time_ns)
    fails(
        lambda: ctx.stub.RegisterVariable(request, timeout=WAIT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a pickled list of numbers",
    )


def test_batches_keyed_by_requested_identifier(ctx: SnakepitContext) -> None:
    ctx.register_variable("x", "integer", 1, {"max": 10})
    ctx.register_variable("y", "integer", 2)
    values, missing = ctx.get_variables(["x", "var_y", "ghost"])
    assert (values, missing) == ({"x": 1, "var_y": 2}, ["ghost"])
    # Non-atomic: the good key is applied, the bad one reported (success stays true).
    result = ctx.update_variables({"x": 50, "y": 3})
    assert result["y"] is True and "above maximum 10" in result["x"]
    # Atomic: nothing applied, only the errors come back.
    assert set(ctx.update_variables({"x": 50, "y": 4}, atomic=True)) == {"x"}
    assert ctx.get_variable("y") == 3
    assert ctx.update_variables({"x": 5, "y": 4}, atomic=True) == {"x": True, "y": True}


def test_list_and_delete(ctx: SnakepitContext) -> None:
    for name in ("temp_b", "temp_a", "other"):
        ctx.register_variable(name, "integer", 1)
    assert [v["name"] for v in ctx.list_variables("temp*")] == ["temp_a", "temp_b"]
    assert {v["id"] for v in ctx.list_variables()} == {"var_temp_a", "var_temp_b", "var_other"}
    ctx.delete_variable("var_other")
    with pytest.raises(VariableNotFoundError, match="other"):
        ctx.get_variable("other")


def test_watch_sees_writes_of_both_protocols(
    ctx: SnakepitContext, client: SessionStoreProvider
) -> None:
    ctx.register_variable("w", "integer", 0)
    stream = ctx.watch(["w"])
    first = next(stream)
    assert (first.update_type, first.variable_id) == ("initial_value", "var_w")
    ctx.update_variable("w", 1)
    client.set_variable(ctx.session_id, "w", 2)  # written through dspex.bridge.v1
    changes = []
    for update in stream:
        if update.update_type == "value_change":
            changes.append(json.loads(update.variable.value.value))
        if len(changes) == 2:
            break
    heartbeat = next(u for u in stream if u.update_type == "heartbeat")
    stream.cancel()
    assert changes == [1, 2]
    assert heartbeat.variable_id == ""


def test_locks_and_values_cross_protocols(
    ctx: SnakepitContext, client: SessionStoreProvider
) -> None:
    sid = ctx.session_id
    client.register_variable(sid, "lr", make_spec(float, max=1.0), 0.1)
    assert ctx.get_variable("lr") == 0.1  # registered through dspex, read through snakepit
    ctx.update_variable("lr", 0.3)
    assert client.get_variable(sid, "lr").value == 0.3
    client.acquire_lock(sid, "lr", owner="secret", optimizer_id="grid", lease=30)
    assert ctx.list_variables("lr")[0]["optimizing"]
    fails(
        lambda: ctx.update_variable("lr", 0.4),
        grpc.StatusCode.FAILED_PRECONDITION,
        "variable_locked_for_optimization",
    )
    # The holder's token travels as dspex-lock-owner metadata through either protocol.
    request = sp.SetVariableRequest(
        session_id=sid, variable_identifier="lr", value=encode("float", 0.5)
    )
    ctx.stub.SetVariable(request, metadata=(("dspex-lock-owner", "secret"),), timeout=WAIT)
    client.release_lock(sid, "lr", owner="secret")
    assert ctx.get_variable("lr") == 0.5


def test_history_rollback_and_unimplemented(ctx: SnakepitContext) -> None:
    ctx.register_variable("h", "integer", 1)
    ctx.update_variable("h", 2)
    history = sp.GetVariableHistoryRequest(session_id=ctx.session_id, variable_identifier="h")
    entries = ctx.stub.GetVariableHistory(history, timeout=WAIT).entries
    assert [(e.version, json.loads(e.value.value)) for e in entries] == [(0, 1), (1, 2)]
    rollback = sp.RollbackVariableRequest(
        session_id=ctx.session_id, variable_identifier="h", target_version=0
    )
    assert ctx.stub.RollbackVariable(rollback, timeout=WAIT).variable.version == 2
    assert ctx.get_variable("h") == 1
    fails(
        lambda: ctx.stub.ExecuteTool(sp.ExecuteToolRequest(session_id=ctx.session_id)),
        grpc.StatusCode.UNIMPLEMENTED,
        "ToolStore",
    )


def test_reflection_and_health_name_the_original_service(channel: grpc.Channel) -> None:
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    symbol = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="snakepit.bridge.BridgeService"
    )
    (found,) = list(call(iter([symbol]), timeout=WAIT))
    names = {
        descriptor_pb2.FileDescriptorProto.FromString(raw).name
        for raw in found.file_descriptor_response.file_descriptor_proto
    }
    assert "snakepit_bridge.proto" in names  # the original file name
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service="snakepit.bridge.BridgeService"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
