"""Layer 2, gRPC adapter: ``snakepit.bridge.BridgeService``, the original bridge's protocol.

``dspex serve --snakepit-compat`` serves it beside ``dspex.bridge.v1`` over the same provider,
access guard, limits and watch machinery, so a variable written through either protocol is read,
watched and locked through the other. The wire shape is the original's (messages, field numbers,
JSON-in-Any values, ``"Session not found: <id>"``-style messages that old clients match); where the
original server misbehaved, this one does the correct thing. docs/protocol.md ("snakepit
compatibility") lists every difference.
"""

# ruff: noqa: N802 - servicer methods carry the CamelCase RPC names of the proto

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import grpc

import dspex.errors as errors
from dspex._model import VariableRecord
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex._proto.snakepit import snakepit_bridge_pb2 as sp
from dspex.state.server.calls import CallInfo, run_sync, unary
from dspex.state.server.convert import watch_message
from dspex.state.server.handlers import register_service, service_methods
from dspex.state.server.observe import CallObserver
from dspex.state.server.servicer import SessionStoreServicer
from dspex.state.server.snakepit_errors import snakepit_error
from dspex.state.wire.snakepit import (
    ID_PREFIX,
    decode_any,
    encode_any,
    spec_from_snakepit,
    timestamp,
    variable_message,
)
from dspex.state.wire.values import json_object, record_from_proto

__all__ = ["SNAKEPIT_SERVICE", "UNIMPLEMENTED", "SnakepitServicer", "add_snakepit"]

SNAKEPIT_SERVICE: Final[str] = sp.DESCRIPTOR.services_by_name["BridgeService"].full_name
UNIMPLEMENTED: Final = (
    "ExecuteTool", "ExecuteStreamingTool", "RegisterTools", "ExecuteElixirTool",
    "StartOptimization", "StopOptimization",
)  # fmt: skip
"""RPCs answered UNIMPLEMENTED: tools run through dspex.bridge.v1.ToolStore, locks likewise."""
_UPDATE_TYPES: Final = {
    "initial": "initial_value",
    "register": "value_change",
    "set": "value_change",
    "rollback": "value_change",
    "delete": "delete",
    "stale": "stale",
    "lock": "lock_change",
}

_Method = Callable[[Any, Any, CallInfo], Any]


def _rpc(*, writes: bool = False) -> Callable[[_Method], Any]:
    """:func:`unary`, with dspex errors re-worded as the original server worded them."""

    def decorate(method: _Method) -> Any:
        @functools.wraps(method)
        async def translated(self: Any, request: Any, call: CallInfo) -> Any:
            try:
                return await run_sync(self, method, self, request, call)
            except errors.DspexError as exc:
                raise snakepit_error(exc, request) from None

        return unary(writes=writes)(translated)

    return decorate


class SnakepitServicer:
    """The ``snakepit.bridge.BridgeService`` RPCs over the session store's provider.

    Args:
        store: the ``dspex.bridge.v1`` servicer of the same server (provider, guard, limits,
            worker threads and watch streams are shared).
        tools: the tool store of the same server, for ``GetExposedElixirTools`` (None: no tools).
    """

    def __init__(self, store: SessionStoreServicer, tools: Any = None) -> None:
        self.store = store
        self.provider = store.provider
        self.guard = store.guard
        self.offload = store.offload
        self.executor = store.executor
        self.tools = tools
        self._metadata: dict[str, dict[str, str]] = {}
        for name in UNIMPLEMENTED:
            setattr(self, name, _unimplemented(name))

    def _allow(self, call: CallInfo, permission: str, session_id: str, *names: str) -> None:
        if self.guard is not None:
            self.guard.require(call.principal, permission, session_id, names)

    def _check_size(self, name: str, *parts: bytes) -> None:
        limit = self.store.limits.max_value_bytes
        size = sum(len(part) for part in parts)
        if limit is not None and size > limit:
            raise errors.LimitExceededError(
                f"variable {name!r}: value of {size} bytes exceeds the store's limit of {limit} "
                "bytes (dspex serve --max-value-bytes); send a smaller value",
                name=name,
                size=size,
                limit=limit,
            )

    def _resolve(self, call: CallInfo, permission: str, sid: str, ident: str) -> VariableRecord:
        """The record an identifier names: a name, else an id ``var_<name>``."""
        try:
            record = self.provider.get_variable(sid, ident)
        except errors.VariableNotFoundError:
            if not ident.startswith(ID_PREFIX):
                raise
            record = self.provider.get_variable(sid, ident[len(ID_PREFIX) :])
        self._allow(call, permission, sid, record.name)
        return record

    def _names(
        self, sid: str, identifiers: Iterable[str], records: Iterable[VariableRecord] = ()
    ) -> dict[str, str | None]:
        """identifier -> variable name (None when unknown), read at one revision (or among
        ``records`` when given)."""
        names = {record.name for record in (records or self.provider.list_variables(sid))}
        found: dict[str, str | None] = {}
        for ident in identifiers:
            bare = ident[len(ID_PREFIX) :] if ident.startswith(ID_PREFIX) else None
            found[ident] = ident if ident in names else bare if bare in names else None
        return found

    # -- health and sessions --------------------------------------------------------------

    @_rpc()
    def Ping(self, request: Any, call: CallInfo) -> Any:
        return sp.PingResponse(
            message=f"pong: {request.message}", server_time=timestamp(time.time())
        )

    @_rpc()
    def InitializeSession(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        if not sid:
            raise errors.StoreProtocolError(
                "InitializeSessionRequest.session_id is empty; send the id of the session "
                "to create"
            )
        if self.guard is not None:
            self.guard.may_join(call.principal, sid)
        try:
            self.provider.get_session(sid)
        except errors.SessionError:
            self.provider.create_session(sid, ttl=self.store.limits.session_ttl)
            self._metadata[sid] = dict(request.metadata)
            return sp.InitializeSessionResponse(success=True)
        raise errors.SessionExistsError(f"Session already exists: {sid}", session_id=sid)

    @_rpc(writes=True)
    def CleanupSession(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        try:
            count = self.provider.get_session(sid).variable_count
        except errors.SessionError:
            return sp.CleanupSessionResponse(success=True, resources_cleaned=0)
        if self.guard is not None:
            self.guard.require_whole(call.principal, "write", sid)
        self.provider.close_session(sid)
        self._metadata.pop(sid, None)
        return sp.CleanupSessionResponse(success=True, resources_cleaned=count)

    @unary()
    async def GetSession(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        try:
            info = await run_sync(self, self._touch, call, sid)
        except errors.DspexError as exc:
            raise snakepit_error(exc, request) from None
        tools = 0 if self.tools is None else len(self.tools.hub.listing(sid))
        return sp.GetSessionResponse(
            session_id=sid,
            metadata=self._metadata.get(sid, {}),
            created_at=timestamp(info.created_at),
            variable_count=info.variable_count,
            tool_count=tools,
        )

    def _touch(self, call: CallInfo, sid: str) -> Any:
        self._allow(call, "read", sid)
        self.provider.heartbeat(sid)
        return self.provider.get_session(sid)

    @_rpc()
    def Heartbeat(self, request: Any, call: CallInfo) -> Any:
        try:
            self._touch(call, request.session_id)
            valid = True
        except errors.SessionError:
            valid = False
        return sp.HeartbeatResponse(server_time=timestamp(time.time()), session_valid=valid)

    # -- variables --------------------------------------------------------------------------

    @_rpc(writes=True)
    def RegisterVariable(self, request: Any, call: CallInfo) -> Any:
        sid, name = request.session_id, request.name
        self._check_size(name, request.initial_value.value, request.initial_binary_value)
        constraints = json_object(
            request.constraints_json, "constraints_json", errors.ConstraintError
        )
        plain = decode_any(request.initial_value, request.initial_binary_value, request.type, name)
        spec = spec_from_snakepit(request.type, constraints, plain)
        self._allow(call, "write", sid, name)
        metadata = dict(request.metadata) or None
        self.provider.register_variable(sid, name, spec, plain, metadata=metadata)
        return sp.RegisterVariableResponse(success=True, variable_id=ID_PREFIX + name)

    @_rpc()
    def GetVariable(self, request: Any, call: CallInfo) -> Any:
        record = self._resolve(call, "read", request.session_id, request.variable_identifier)
        return sp.GetVariableResponse(variable=variable_message(record))

    @_rpc(writes=True)
    def SetVariable(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        record = self._resolve(call, "write", sid, request.variable_identifier)
        self._check_size(record.name, request.value.value, request.binary_value)
        plain = decode_any(request.value, request.binary_value, record.spec.type, record.name)
        expected = _expected_version(request)
        new = self.provider.set_variable(sid, record.name, plain, expected_version=expected)
        return sp.SetVariableResponse(success=True, new_version=new.version - 1)

    @_rpc()
    def GetVariables(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        names = self._names(sid, request.variable_identifiers)
        known = [name for name in names.values() if name is not None]
        self._allow(call, "read", sid, *known)
        records = self.provider.get_variables(sid, known) if known else {}
        response = sp.BatchGetVariablesResponse()
        for ident, name in names.items():
            if name is None:
                response.missing_variables.append(ident)
            else:
                response.variables[ident].CopyFrom(variable_message(records[name]))
        return response

    @_rpc(writes=True)
    def SetVariables(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        records = {r.name: r for r in self.provider.list_variables(sid)}
        names = self._names(sid, request.updates, records.values())
        failed: dict[str, str] = {}
        values: dict[str, Any] = {}
        keys: dict[str, str] = {}
        for key, value in request.updates.items():
            name = names[key]
            if name is None:
                failed[key] = f"Variable not found: {key}"
                continue
            binary = request.binary_updates.get(key, b"")
            try:
                self._check_size(name, value.value, binary)
                values[name] = decode_any(value, binary, records[name].spec.type, name)
                keys[name] = key
            except errors.DspexError as exc:
                failed[key] = snakepit_error(exc, request, key).message
        self._allow(call, "write", sid, *values)
        response = sp.BatchSetVariablesResponse()
        if request.atomic and failed:
            response.errors.update(failed)
            return response  # success=False: nothing applied
        results = (
            self.provider.update_variables(sid, values, atomic=request.atomic) if values else {}
        )
        for name, outcome in results.items():
            if isinstance(outcome, errors.BatchUpdateError):
                continue  # only not applied: the original lists just the names that failed
            if isinstance(outcome, errors.DspexError):
                failed[keys[name]] = snakepit_error(outcome, request, keys[name]).message
            else:
                response.new_versions[keys[name]] = outcome.version - 1
        response.errors.update(failed)
        response.success = not (request.atomic and failed)
        return response

    @_rpc()
    def ListVariables(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        readable = None if self.guard is None else self.guard.filter(call.principal, "read", sid)
        records = self.provider.list_variables(sid, request.pattern or "*")
        return sp.ListVariablesResponse(
            variables=[
                variable_message(r) for r in records if readable is None or readable(r.name)
            ]
        )

    @_rpc(writes=True)
    def DeleteVariable(self, request: Any, call: CallInfo) -> Any:
        record = self._resolve(call, "write", request.session_id, request.variable_identifier)
        self.provider.delete_variable(request.session_id, record.name)
        return sp.DeleteVariableResponse(success=True)

    @_rpc()
    def GetVariableHistory(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        record = self._resolve(call, "read", sid, request.variable_identifier)
        kept = self.provider.get_history(sid, record.name, request.limit or None)
        return sp.GetVariableHistoryResponse(entries=[_history_entry(r) for r in kept])

    @_rpc(writes=True)
    def RollbackVariable(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        record = self._resolve(call, "write", sid, request.variable_identifier)
        new = self.provider.rollback_variable(sid, record.name, request.target_version + 1)
        return sp.RollbackVariableResponse(success=True, variable=variable_message(new))

    @_rpc(writes=True)
    def AddDependency(self, request: Any, call: CallInfo) -> Any:
        sid = request.session_id
        upstream = self._resolve(call, "write", sid, request.from_variable).name
        downstream = self._resolve(call, "write", sid, request.to_variable).name
        self.provider.add_dependency(sid, upstream, downstream)
        return sp.AddDependencyResponse(success=True)

    # -- tools ------------------------------------------------------------------------------

    @unary()
    async def GetExposedElixirTools(self, request: Any, call: CallInfo) -> Any:
        listing = [] if self.tools is None else self.tools.hub.listing(request.session_id)
        if listing and self.guard is not None:
            await run_sync(self, self._allow, call, "read", request.session_id)
        return sp.GetExposedElixirToolsResponse(tools=[_tool_spec(spec) for spec, _, _ in listing])

    # -- watch ------------------------------------------------------------------------------

    async def WatchVariables(self, request: Any, context: Any) -> None:
        """The dspex watch stream of the same names, each message re-shaped on the way out."""
        sid = request.session_id
        idents = list(request.variable_identifiers)
        try:
            names = await run_sync(self, self._names, sid, idents) if idents else {}
        except errors.SessionError:
            names = {}  # the dspex watch below reports the missing session
        watch = pb.WatchVariablesRequest(
            session_id=sid,
            names=[names.get(i) or i for i in idents],
            include_initial=request.include_initial_values,
        )
        await self.store.WatchVariables(watch, _Reshaping(context))


def _expected_version(request: Any) -> int | None:
    """dspex's expected version (1-based) from the original's 0-based fields.

    proto3 cannot tell an unset ``expected_version`` from 0, so 0 means "no check" there; the
    metadata key ``expected_version`` states any version, 0 included.
    """
    text = request.metadata.get("expected_version")
    if text is not None:
        try:
            return int(text) + 1
        except ValueError:
            raise errors.StoreProtocolError(
                f"metadata expected_version={text!r} is not an integer"
            ) from None
    return request.expected_version + 1 if request.expected_version > 0 else None


def _history_entry(record: VariableRecord) -> Any:
    return sp.VariableHistoryEntry(
        version=record.version - 1,
        value=encode_any(record.spec.type, record.value),
        timestamp=timestamp(record.updated_at),
        changed_by=record.writer,
        metadata={"revision": str(record.revision)},
    )


def _tool_spec(spec: Any) -> Any:
    """A dspex tool's JSON Schema as the original's ToolSpec with one ParameterSpec each."""
    schema = json.loads(spec.parameters_json or "{}")
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        parameter = sp.ParameterSpec(
            name=name,
            type=str(prop.get("type", "any")),
            description=str(prop.get("description", "")),
            required=name in required,
            validation_json=json.dumps(prop),
        )
        if "default" in prop:
            url = "type.googleapis.com/google.protobuf.StringValue"
            parameter.default_value.type_url = url
            parameter.default_value.value = json.dumps(prop["default"]).encode()
        parameters.append(parameter)
    return sp.ToolSpec(
        name=spec.name,
        description=spec.description,
        parameters=parameters,
        metadata={"owner": "dspex", "tool_type": "remote"},
    )


def _unimplemented(name: str) -> Callable[[Any, Any], Any]:
    async def handler(request: Any, context: Any) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{name} is not served by dspex's snakepit compatibility; use the "
            "dspex.bridge.v1 ToolStore / AcquireLock RPCs (docs/protocol.md)",
        )

    return handler


class _Reshaping:
    """A servicer context whose ``write`` turns dspex watch messages into snakepit ones."""

    def __init__(self, context: Any) -> None:
        self._context = context

    async def write(self, payload: bytes) -> None:
        message = watch_message(payload)  # the dspex stream writes encoded messages
        event = message.WhichOneof("event")
        if event == "heartbeat":
            server_time = timestamp(message.heartbeat.server_time)
            await self._context.write(
                sp.VariableUpdate(update_type="heartbeat", timestamp=server_time)
            )
        elif event == "update":
            await self._context.write(_update(message.update))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _update(update: Any) -> Any:
    record = record_from_proto(update.variable)
    metadata = {"revision": str(update.revision), "kind": update.kind}
    if update.batch_last:
        metadata["batch"] = f"{update.batch_first}-{update.batch_last}"
    return sp.VariableUpdate(
        variable_id=ID_PREFIX + update.name,
        variable=variable_message(record),
        update_source=record.writer,
        update_metadata=metadata,
        timestamp=timestamp(record.updated_at),
        update_type=_UPDATE_TYPES.get(update.kind, update.kind),
    )


def add_snakepit(
    server: Any, store: SessionStoreServicer, tools: Any, observers: Sequence[CallObserver] = ()
) -> None:
    """Serve ``snakepit.bridge.BridgeService`` on ``server`` beside ``store`` and ``tools``,
    its calls seen by ``observers`` (metrics, traces) like every other RPC."""
    servicer = SnakepitServicer(store, tools)
    methods = service_methods(sp, "BridgeService")
    register_service(server, SNAKEPIT_SERVICE, servicer, methods, observers)
