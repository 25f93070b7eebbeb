"""A client of ``snakepit.bridge.BridgeService`` that calls the server the way the original
Python ``SessionContext`` (snakepit 0.4.x) did: a sync stub generated from the compat proto,
values as JSON in ``Any`` with ``type.googleapis.com/snakepit.<type>`` URLs, constraints as
JSON text, missing variables recognised by "not found" in the error text, batch results as
the original returned them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2

from dspex._proto.snakepit import snakepit_bridge_pb2 as sp
from dspex._proto.snakepit import snakepit_bridge_pb2_grpc

WAIT = 10.0


class VariableNotFoundError(KeyError):
    """As the original client: raised when the server's error text contains "not found"."""


def encode(type_name: str, value: Any) -> Any:
    """``TypeSerializer.encode_any``: the JSON of the value in an Any."""
    return any_pb2.Any(
        type_url=f"type.googleapis.com/snakepit.{type_name}", value=json.dumps(value).encode()
    )


def decode(value: Any) -> Any:
    """``TypeSerializer.decode_any`` (JSON path): the type is the URL's last dotted part."""
    decoded = json.loads(value.value)
    if value.type_url.split(".")[-1] == "tensor":
        return {"shape": decoded["shape"], "data": decoded["data"]}
    return decoded


class SnakepitContext:
    """The original SessionContext's calls, over a sync BridgeService stub."""

    def __init__(self, channel: grpc.Channel, session_id: str) -> None:
        self.stub = snakepit_bridge_pb2_grpc.BridgeServiceStub(channel)
        self.session_id = session_id

    def register_variable(
        self, name: str, var_type: str, value: Any, constraints: Mapping[str, Any] | None = None
    ) -> str:
        request = sp.RegisterVariableRequest(
            session_id=self.session_id,
            name=name,
            type=var_type,
            initial_value=encode(var_type, value),
            constraints_json=json.dumps(constraints) if constraints else "",
        )
        response = self.stub.RegisterVariable(request, timeout=WAIT)
        if not response.success:
            raise RuntimeError(f"Failed to register variable: {response.error_message}")
        return str(response.variable_id)

    def get_variable(self, identifier: str) -> Any:
        return decode(self.get_record(identifier).value)

    def get_record(self, identifier: str) -> Any:
        request = sp.GetVariableRequest(session_id=self.session_id, variable_identifier=identifier)
        try:
            return self.stub.GetVariable(request, timeout=WAIT).variable
        except grpc.RpcError as exc:
            if "not found" in str(exc).lower():
                raise VariableNotFoundError(f"Variable not found: {identifier}") from exc
            raise

    def update_variable(self, identifier: str, value: Any, **fields: Any) -> int:
        var_type = self.get_record(identifier).type
        request = sp.SetVariableRequest(
            session_id=self.session_id,
            variable_identifier=identifier,
            value=encode(var_type, value),
            **fields,
        )
        response = self.stub.SetVariable(request, timeout=WAIT)
        if not response.success:
            raise RuntimeError(f"Failed to update variable: {response.error_message}")
        return int(response.new_version)

    def list_variables(self, pattern: str | None = None) -> list[dict[str, Any]]:
        request = sp.ListVariablesRequest(session_id=self.session_id, pattern=pattern or "")
        return [
            {
                "id": v.id,
                "name": v.name,
                "type": v.type,
                "value": decode(v.value),
                "version": v.version,
                "constraints": json.loads(v.constraints_json) if v.constraints_json else {},
                "optimizing": v.optimization_status.optimizing,
            }
            for v in self.stub.ListVariables(request, timeout=WAIT).variables
        ]

    def delete_variable(self, identifier: str) -> None:
        request = sp.DeleteVariableRequest(
            session_id=self.session_id, variable_identifier=identifier
        )
        if not self.stub.DeleteVariable(request, timeout=WAIT).success:
            raise RuntimeError("Failed to delete variable")

    def get_variables(self, identifiers: list[str]) -> tuple[dict[str, Any], list[str]]:
        request = sp.BatchGetVariablesRequest(
            session_id=self.session_id, variable_identifiers=identifiers
        )
        response = self.stub.GetVariables(request, timeout=WAIT)
        values = {key: decode(v.value) for key, v in response.variables.items()}
        return values, list(response.missing_variables)

    def update_variables(self, updates: Mapping[str, Any], atomic: bool = False) -> dict[str, Any]:
        types = {key: self.get_record(key).type for key in updates}
        request = sp.BatchSetVariablesRequest(
            session_id=self.session_id,
            updates={key: encode(types[key], value) for key, value in updates.items()},
            atomic=atomic,
        )
        response = self.stub.SetVariables(request, timeout=WAIT)
        if not response.success:
            return dict(response.errors)  # the original returned only the errors here
        return {key: response.errors.get(key, True) for key in updates}

    def watch(self, names: list[str], initial: bool = True) -> Iterator[Any]:
        request = sp.WatchVariablesRequest(
            session_id=self.session_id, variable_identifiers=names, include_initial_values=initial
        )
        return self.stub.WatchVariables(request, timeout=WAIT * 3)  # type: ignore[no-any-return]

    def heartbeat(self) -> bool:
        request = sp.HeartbeatRequest(session_id=self.session_id)
        return bool(self.stub.Heartbeat(request, timeout=WAIT).session_valid)
