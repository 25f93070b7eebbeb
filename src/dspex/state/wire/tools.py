"""Wire: ``ToolStore`` messages <-> tool values, for the server and the client.

The only module that builds or reads ``tools_pb2`` messages. Arguments and results stay JSON
text here; the tool layer parses them where they are used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

import dspex.errors as errors
from dspex._proto.bridge.v1 import tools_pb2 as pb
from dspex._proto.bridge.v1 import tools_pb2_grpc
from dspex.state.core.tool_model import CallOutcome, ToolFailure, ToolInfo, ToolSpecText

__all__ = [
    "MAX_NAME_CHARS",
    "SERVICE_NAME",
    "CallOutcome",
    "Outcome",
    "ServeEvent",
    "ToolSpecText",
    "stub",
]

SERVICE_NAME: Final[str] = pb.DESCRIPTOR.services_by_name["ToolStore"].full_name
MAX_NAME_CHARS: Final = 200
"""Longest tool name the store accepts."""

Outcome = tuple[str, ToolFailure | None]
"""A call's outcome: (result JSON, None) or ("", what the tool raised)."""


class ServeEvent(NamedTuple):
    """One ServeTools message: ``kind`` is "started" (with the owner's ``serving_key``),
    "call" or "heartbeat"."""

    kind: str
    call_id: str = ""
    name: str = ""
    arguments_json: str = ""
    serving_key: str = ""


def stub(channel: Any) -> Any:
    """A ``ToolStore`` stub over an open channel."""
    return tools_pb2_grpc.ToolStoreStub(channel)


# -- shared pieces -------------------------------------------------------------------------


def _failure_to_proto(failure: ToolFailure) -> Any:
    return pb.ToolFailure(
        code=failure.code, type=failure.type, message=failure.message, traceback=failure.traceback
    )


def _failure_from_proto(message: Any) -> ToolFailure:
    return ToolFailure(message.code, message.type, message.message, message.traceback)


def _info_to_proto(spec: ToolSpecText, owner: str, connected: bool) -> Any:
    return pb.ToolInfo(
        spec=pb.ToolSpec(
            name=spec.name, description=spec.description, parameters_json=spec.parameters_json
        ),
        owner_id=owner,
        connected=connected,
    )


def _info_from_proto(message: Any) -> ToolInfo:
    try:
        parameters = json.loads(message.spec.parameters_json or "{}")
    except ValueError:
        parameters = {}
    return ToolInfo(
        message.spec.name,
        message.spec.description,
        parameters if isinstance(parameters, dict) else {},
        message.owner_id,
        message.connected,
    )


def _outcome(message: Any) -> Outcome:
    if message.WhichOneof("outcome") == "failure":
        return "", _failure_from_proto(message.failure)
    return message.result_json, None


def _set_outcome(message: Any, outcome: Outcome) -> Any:
    result_json, failure = outcome
    if failure is not None:
        message.failure.CopyFrom(_failure_to_proto(failure))
    else:
        message.result_json = result_json
    return message


def _malformed(reason: str) -> errors.StoreProtocolError:
    return errors.StoreProtocolError(f"malformed request: {reason}")


def _owner(request: Any) -> str:
    if not request.owner_id:
        raise _malformed("owner_id is empty")
    return str(request.owner_id)


# -- client side ---------------------------------------------------------------------------


def register_request(session_id: str, owner: str, key: str, spec: ToolSpecText) -> Any:
    return pb.RegisterToolRequest(
        session_id=session_id,
        owner_id=owner,
        serving_key=key,
        spec=pb.ToolSpec(
            name=spec.name, description=spec.description, parameters_json=spec.parameters_json
        ),
    )


def info_result(response: Any) -> ToolInfo:
    return _info_from_proto(response.tool)


def unregister_request(session_id: str, owner: str, key: str, names: Iterable[str]) -> Any:
    return pb.UnregisterToolsRequest(
        session_id=session_id, owner_id=owner, serving_key=key, names=list(names)
    )


def removed_result(response: Any) -> int:
    return int(response.removed)


def list_request(session_id: str) -> Any:
    return pb.ListToolsRequest(session_id=session_id)


def infos_result(response: Any) -> list[ToolInfo]:
    return [_info_from_proto(message) for message in response.tools]


def call_request(session_id: str, name: str, arguments_json: str, timeout: float | None) -> Any:
    request = pb.CallToolRequest(session_id=session_id, name=name, arguments_json=arguments_json)
    if timeout is not None:
        request.timeout = timeout
    return request


def call_result(response: Any) -> CallOutcome:
    result_json, failure = _outcome(response)
    return CallOutcome(result_json, failure, response.owner_id)


def serve_request(session_id: str, owner: str, key: str) -> Any:
    return pb.ServeToolsRequest(session_id=session_id, owner_id=owner, serving_key=key)


def serve_event(message: Any) -> ServeEvent:
    kind = message.WhichOneof("event") or "heartbeat"
    if kind == "call":
        call = message.call
        return ServeEvent("call", call.call_id, call.name, call.arguments_json)
    if kind == "started":
        return ServeEvent(kind, serving_key=message.started.serving_key)
    return ServeEvent(kind)


def return_request(session_id: str, owner: str, call_id: str, outcome: Outcome) -> Any:
    request = pb.ReturnToolResultRequest(session_id=session_id, owner_id=owner, call_id=call_id)
    return _set_outcome(request, outcome)


def accepted_result(response: Any) -> bool:
    return bool(response.accepted)


# -- server side ---------------------------------------------------------------------------


def read_register(request: Any) -> tuple[str, str, str, ToolSpecText]:
    """Raises StoreProtocolError for an empty or overlong name, or parameters that are not a
    JSON object."""
    spec = request.spec
    if not spec.name or len(spec.name) > MAX_NAME_CHARS:
        raise _malformed(f"a tool name must have 1 to {MAX_NAME_CHARS} characters")
    try:
        parameters = json.loads(spec.parameters_json or "{}")
    except ValueError as exc:
        raise _malformed(f"parameters_json of tool {spec.name!r} is not JSON ({exc})") from None
    if not isinstance(parameters, dict):
        raise _malformed(f"parameters_json of tool {spec.name!r} is not a JSON object")
    text = ToolSpecText(spec.name, spec.description, spec.parameters_json or "{}")
    return request.session_id, _owner(request), request.serving_key, text


def register_response(spec: ToolSpecText, owner: str, connected: bool) -> Any:
    return pb.RegisterToolResponse(tool=_info_to_proto(spec, owner, connected))


def read_unregister(request: Any) -> tuple[str, str, str, list[str]]:
    return request.session_id, _owner(request), request.serving_key, list(request.names)


def unregister_response(removed: int) -> Any:
    return pb.UnregisterToolsResponse(removed=removed)


def read_list(request: Any) -> str:
    return str(request.session_id)


def list_response(tools: Iterable[tuple[ToolSpecText, str, bool]]) -> Any:
    return pb.ListToolsResponse(
        tools=[_info_to_proto(spec, owner, connected) for spec, owner, connected in tools]
    )


def read_call(request: Any) -> tuple[str, str, str, float | None]:
    """Raises StoreProtocolError for a negative or non-finite timeout."""
    timeout = request.timeout if request.HasField("timeout") else None
    if timeout is not None and not 0 <= timeout < float("inf"):
        raise _malformed(f"timeout must be a finite number of seconds >= 0, not {timeout}")
    return request.session_id, request.name, request.arguments_json, timeout


def call_response(outcome: Outcome, owner: str) -> Any:
    return _set_outcome(pb.CallToolResponse(owner_id=owner), outcome)


def read_serve(request: Any) -> tuple[str, str, str]:
    return request.session_id, _owner(request), request.serving_key


def serve_started(owner: str, key: str) -> Any:
    return pb.ServeToolsResponse(started=pb.ServeToolsStarted(owner_id=owner, serving_key=key))


def serve_heartbeat(server_time: float) -> Any:
    return pb.ServeToolsResponse(heartbeat=pb.ServeToolsHeartbeat(server_time=server_time))


def serve_call(call_id: str, name: str, arguments_json: str) -> Any:
    return pb.ServeToolsResponse(
        call=pb.ToolCall(call_id=call_id, name=name, arguments_json=arguments_json)
    )


def read_return(request: Any) -> tuple[str, str, str, Outcome]:
    return request.session_id, _owner(request), request.call_id, _outcome(request)


def return_response(accepted: bool) -> Any:
    return pb.ReturnToolResultResponse(accepted=accepted)
