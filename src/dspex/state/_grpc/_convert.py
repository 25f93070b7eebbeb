"""Layer 2, gRPC adapter: domain objects <-> ``dspex.bridge.v1`` messages.

The only module that builds or reads ``*_pb2`` messages. Values travel as JSON text, numpy
arrays as typed raw little-endian bytes (dtype, shape, data), never pickle. Decoding gives the
same canonical forms as :func:`dspex._model.validate` (read-only JSON containers, embeddings as
tuples, read-only arrays), so a record read over the wire equals one read locally.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import dspex.errors as errors
from dspex._model import (
    EMPTY,
    SessionInfo,
    VariableRecord,
    VariableSpec,
    VariableUpdate,
    freeze,
    make_spec,
)
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex.state._grpc._status import details_json, error_from_code

__all__ = [
    "decode_value",
    "encode_value",
    "record_from_proto",
    "record_to_proto",
    "spec_from_json",
    "spec_to_json",
]

_NUMERIC_KINDS: Final = "biufc"
_CACHE_LIMIT: Final = 4096
_new_tuple: Any = tuple.__new__

# -- values -------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays nested inside lists/dicts
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _numpy_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def encode_value(value: Any, name: str = "?") -> Any:
    """Return a ``Value`` message for ``value``.

    Raises:
        VariableTypeError: the value can travel neither as JSON nor as a numeric array.
    """
    if _numpy_array(value) and value.dtype.kind in _NUMERIC_KINDS:
        return pb.Value(array=_encode_array(value))
    try:
        return pb.Value(json=json.dumps(value, default=_json_default))
    except (TypeError, ValueError, RecursionError) as exc:
        raise errors.VariableTypeError(
            f"variable {name!r}: a value of type {type(value).__name__} cannot be sent to the "
            f"session store ({exc}); use JSON-compatible values or numeric numpy arrays",
            name=name,
        ) from exc


def _encode_array(value: Any) -> Any:
    array = value  # tobytes() writes C order whatever the layout (and keeps 0-d arrays 0-d)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return pb.Array(dtype=array.dtype.str, shape=array.shape, data=array.tobytes())


def decode_value(message: Any, name: str, max_bytes: int | None = None) -> Any:
    """Return the plain value of a ``Value`` message (server side: before validation).

    Raises:
        StoreProtocolError: no value was given.
        LimitExceededError: the value is larger than ``max_bytes``.
        VariableValueError: invalid JSON, or array bytes that disagree with shape and dtype.
    """
    kind = message.WhichOneof("kind")
    if kind == "json":
        text = message.json
        _check_size(name, len(text), max_bytes)
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise errors.VariableValueError(
                f"variable {name!r}: the value is not valid JSON ({exc}); send JSON text",
                name=name,
            ) from exc
    if kind == "array":
        _check_size(name, len(message.array.data), max_bytes)
        return _decode_array(message.array, name)
    raise errors.StoreProtocolError(
        f"malformed request: variable {name!r} has no value (neither json nor array)", name=name
    )


def _check_size(name: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise errors.LimitExceededError(
            f"variable {name!r}: value of {size} bytes exceeds the store's limit of "
            f"{max_bytes} bytes; store a smaller value or raise the server's max_value_bytes",
            name=name,
            size=size,
            limit=max_bytes,
        )


def _decode_array(message: Any, name: str) -> Any:
    import numpy as np

    try:
        dtype = np.dtype(message.dtype)
    except (TypeError, ValueError) as exc:
        raise errors.VariableValueError(
            f"variable {name!r}: array dtype {message.dtype!r} is not a numpy dtype", name=name
        ) from exc
    shape = tuple(message.shape)
    if dtype.kind not in _NUMERIC_KINDS or any(d < 0 for d in shape):
        raise errors.VariableValueError(
            f"variable {name!r}: array dtype {message.dtype!r} / shape {list(shape)} is not a "
            "numeric array (dtype kinds b, i, u, f, c and non-negative dimensions)",
            name=name,
        )
    expected = math.prod(shape) * dtype.itemsize
    if len(message.data) != expected:
        raise errors.VariableValueError(
            f"variable {name!r}: array data is {len(message.data)} bytes but shape "
            f"{list(shape)} and dtype {dtype.str} need {expected} bytes",
            name=name,
        )
    array = np.frombuffer(message.data, dtype=dtype).reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
        array.flags.writeable = False
        array = array.view()
    return array


def _canonical(type_name: str, value: Any) -> Any:
    """The form :func:`dspex._model.validate` gives a stored value of this type."""
    if type_name == "json":
        return freeze(value)
    if type_name == "embedding" and isinstance(value, list):
        return tuple(value)
    return value


# -- specs and records --------------------------------------------------------------------

_spec_json_cache: dict[int, tuple[VariableSpec, str]] = {}
_spec_cache: dict[tuple[str, str], VariableSpec] = {}


def spec_to_json(spec: VariableSpec) -> str:
    """The constraints of ``spec`` as JSON text (cached per spec object)."""
    cached = _spec_json_cache.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    text = json.dumps(spec.to_json()["constraints"], sort_keys=True)
    if len(_spec_json_cache) >= _CACHE_LIMIT:
        _spec_json_cache.clear()
    _spec_json_cache[id(spec)] = (spec, text)
    return text


def spec_from_json(type_name: str, constraints_json: str) -> VariableSpec:
    """Rebuild and check a spec from its wire form (cached per distinct text).

    Raises:
        ConstraintError: unknown type, bad constraints or constraints that are not a JSON object.
    """
    key = (type_name, constraints_json)
    spec = _spec_cache.get(key)
    if spec is None:
        constraints = _json_object(constraints_json, "constraints_json", errors.ConstraintError)
        spec = make_spec(type_name, **constraints)
        if len(_spec_cache) >= _CACHE_LIMIT:
            _spec_cache.clear()
        _spec_cache[key] = spec
    return spec


def _json_object(text: str, what: str, error: type[errors.DspexError]) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON ({exc}); send a JSON object") from exc
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _mapping_json(mapping: Mapping[str, Any] | None) -> str:
    return json.dumps(mapping, default=_json_default) if mapping else ""


def record_to_proto(record: VariableRecord) -> Any:
    """Return the ``Variable`` message for a record."""
    return pb.Variable(
        name=record.name,
        type=record.spec.type,
        constraints_json=spec_to_json(record.spec),
        value=encode_value(record.value, record.name),
        version=record.version,
        revision=record.revision,
        updated_at=record.updated_at,
        writer=record.writer,
        metadata_json=_mapping_json(record.metadata),
        stale=record.stale,
        lock_json=_mapping_json(record.lock),
    )


def record_from_proto(message: Any) -> VariableRecord:
    """Return the immutable record a ``Variable`` message describes."""
    spec = spec_from_json(message.type, message.constraints_json)
    value = message.value
    if value.WhichOneof("kind") == "json":
        plain = _canonical(spec.type, json.loads(value.json))
    else:
        plain = decode_value(value, message.name)
    metadata, lock = message.metadata_json, message.lock_json
    record: VariableRecord = _new_tuple(VariableRecord, (
        message.name, spec, plain, message.version, message.revision, message.updated_at,
        message.writer, freeze(json.loads(metadata)) if metadata else EMPTY, message.stale,
        freeze(json.loads(lock)) if lock else None,
    ))  # fmt: skip
    return record


def records_from_proto(messages: Iterable[Any]) -> list[VariableRecord]:
    """Records of a repeated ``Variable`` field, in order."""
    return [record_from_proto(m) for m in messages]


def _session_to_proto(info: SessionInfo) -> Any:
    message = pb.SessionInfo(
        session_id=info.session_id,
        created_at=info.created_at,
        revision=info.revision,
        variable_count=info.variable_count,
        last_heartbeat=info.last_heartbeat,
    )
    if info.ttl is not None:
        message.ttl = info.ttl
    return message


def _session_from_proto(message: Any) -> SessionInfo:
    return SessionInfo(
        message.session_id,
        message.created_at,
        message.revision,
        message.variable_count,
        message.last_heartbeat,
        message.ttl if message.HasField("ttl") else None,
    )


# -- client side: requests out, results in ------------------------------------------------


def ping_request(message: str) -> Any:
    return pb.PingRequest(message=message)


def ping_result(response: Any) -> str:
    return str(response.message)


def create_session_request(session_id: str | None, ttl: float | None) -> Any:
    request = pb.CreateSessionRequest(session_id=session_id or "")
    if ttl is not None:
        request.ttl = ttl
    return request


def session_id_result(response: Any) -> str:
    return str(response.session_id)


def session_request(kind: str, session_id: str) -> Any:
    """Request naming only a session: kind is GetSession, Heartbeat or CloseSession."""
    return _SESSION_REQUESTS[kind](session_id=session_id)


_SESSION_REQUESTS: Final = {
    "GetSession": pb.GetSessionRequest,
    "Heartbeat": pb.HeartbeatRequest,
    "CloseSession": pb.CloseSessionRequest,
}


def list_sessions_request() -> Any:
    return pb.ListSessionsRequest()


def session_result(response: Any) -> SessionInfo:
    return _session_from_proto(response.session)


def sessions_result(response: Any) -> list[SessionInfo]:
    return [_session_from_proto(m) for m in response.sessions]


def register_variable_request(
    session_id: str, name: str, spec: VariableSpec, value: Any, metadata: Mapping[str, Any] | None
) -> Any:
    return pb.RegisterVariableRequest(
        session_id=session_id,
        name=name,
        type=spec.type,
        constraints_json=spec_to_json(spec),
        value=encode_value(value, name),
        metadata_json=_encode_metadata(metadata),
    )


def _encode_metadata(metadata: Mapping[str, Any] | None) -> str:
    try:
        return _mapping_json(metadata)
    except (TypeError, ValueError) as exc:
        raise errors.VariableValueError(f"metadata must be JSON-serializable ({exc})") from exc


def variable_request(kind: str, session_id: str, name: str) -> Any:
    """Request naming a session and a variable: GetVariable or DeleteVariable."""
    return _VARIABLE_REQUESTS[kind](session_id=session_id, name=name)


_VARIABLE_REQUESTS: Final = {
    "GetVariable": pb.GetVariableRequest,
    "DeleteVariable": pb.DeleteVariableRequest,
}


def get_variables_request(session_id: str, names: Collection[str]) -> Any:
    return pb.GetVariablesRequest(session_id=session_id, names=list(names))


def set_variable_request(
    session_id: str, name: str, value: Any, expected_version: int | None
) -> Any:
    request = pb.SetVariableRequest(
        session_id=session_id, name=name, value=encode_value(value, name)
    )
    if expected_version is not None:
        request.expected_version = expected_version
    return request


def update_variables_request(
    session_id: str,
    values: Mapping[str, Any],
    atomic: bool,
    expected_versions: Mapping[str, int] | None,
) -> Any:
    expected = expected_versions or {}
    entries = []
    for name, value in values.items():
        entry = pb.NamedValue(name=name, value=encode_value(value, name))
        if name in expected:
            entry.expected_version = expected[name]
        entries.append(entry)
    return pb.UpdateVariablesRequest(session_id=session_id, values=entries, atomic=atomic)


def list_variables_request(session_id: str, pattern: str) -> Any:
    return pb.ListVariablesRequest(session_id=session_id, pattern=pattern)


def get_history_request(session_id: str, name: str, limit: int | None) -> Any:
    request = pb.GetHistoryRequest(session_id=session_id, name=name)
    if limit is not None:
        request.limit = limit
    return request


def rollback_variable_request(session_id: str, name: str, version: int) -> Any:
    return pb.RollbackVariableRequest(session_id=session_id, name=name, version=version)


def record_result(response: Any) -> VariableRecord:
    """The record of a Register/Get/Set/RollbackVariable response."""
    return record_from_proto(response.variable)


def records_result(response: Any) -> list[VariableRecord]:
    """The records of a GetVariables/ListVariables/GetHistory response."""
    return records_from_proto(response.variables)


def update_results(response: Any) -> dict[str, VariableRecord | errors.DspexError]:
    out: dict[str, VariableRecord | errors.DspexError] = {}
    for result in response.results:
        if result.WhichOneof("outcome") == "variable":
            out[result.name] = record_from_proto(result.variable)
        else:
            error = result.error
            out[result.name] = error_from_code(
                error.code, error.message, error.details_json
            ) or errors.StoreProtocolError(f"unknown error code {error.code!r}: {error.message}")
    return out


def watch_variables_request(
    session_id: str, names: Collection[str], after_revision: int | None, include_initial: bool
) -> Any:
    request = pb.WatchVariablesRequest(
        session_id=session_id, names=list(names), include_initial=include_initial
    )
    if after_revision is not None:
        request.after_revision = after_revision
    return request


def watch_event(message: Any) -> tuple[str, Any]:
    """Classify one stream message: ("started", (revision, head, queue_size, backlog)),
    ("update", VariableUpdate) or ("heartbeat", server_time)."""
    event = message.WhichOneof("event")
    if event == "update":
        update = message.update
        return "update", VariableUpdate(
            update.revision, update.kind, update.name, record_from_proto(update.variable)
        )
    if event == "started":
        started = message.started
        return "started", (
            started.revision,
            started.head_revision,
            started.queue_size,
            started.backlog,
        )
    return "heartbeat", message.heartbeat.server_time


# -- server side: requests in, responses out ----------------------------------------------


def read_ping(request: Any) -> str:
    return str(request.message)


def read_create_session(request: Any) -> tuple[str | None, float | None]:
    return request.session_id or None, request.ttl if request.HasField("ttl") else None


def read_session_id(request: Any) -> str:
    return str(request.session_id)


def read_variable(request: Any) -> tuple[str, str]:
    """(session_id, name) of a request naming one variable."""
    return request.session_id, request.name


def read_register(
    request: Any, max_bytes: int | None
) -> tuple[str, str, VariableSpec, Any, dict[str, Any]]:
    spec = spec_from_json(request.type, request.constraints_json)
    value = decode_value(request.value, request.name, max_bytes)
    metadata = _json_object(request.metadata_json, "metadata_json", errors.VariableValueError)
    return request.session_id, request.name, spec, value, metadata


def read_get_variables(request: Any) -> tuple[str, list[str]]:
    return request.session_id, list(request.names)


def read_set(request: Any, max_bytes: int | None) -> tuple[str, str, Any, int | None]:
    value = decode_value(request.value, request.name, max_bytes)
    expected = request.expected_version if request.HasField("expected_version") else None
    return request.session_id, request.name, value, expected


def read_update(
    request: Any, max_bytes: int | None
) -> tuple[str, dict[str, Any], bool, dict[str, int]]:
    """Raises StoreProtocolError for a name given twice; value errors as decode_value."""
    values: dict[str, Any] = {}
    expected: dict[str, int] = {}
    for entry in request.values:
        if entry.name in values:
            raise errors.StoreProtocolError(
                f"malformed request: variable {entry.name!r} appears twice in one batch",
                name=entry.name,
            )
        values[entry.name] = decode_value(entry.value, entry.name, max_bytes)
        if entry.HasField("expected_version"):
            expected[entry.name] = entry.expected_version
    return request.session_id, values, request.atomic, expected


def read_list(request: Any) -> tuple[str, str]:
    return request.session_id, request.pattern or "*"


def read_history(request: Any) -> tuple[str, str, int | None]:
    limit = request.limit if request.HasField("limit") else None
    return request.session_id, request.name, limit


def read_rollback(request: Any) -> tuple[str, str, int]:
    return request.session_id, request.name, request.version


def read_watch(request: Any) -> tuple[str, list[str], int | None, bool]:
    after = request.after_revision if request.HasField("after_revision") else None
    return request.session_id, list(request.names), after, request.include_initial


def ping_response(message: str, server_time: float) -> Any:
    return pb.PingResponse(message=message, server_time=server_time)


def create_session_response(session_id: str) -> Any:
    return pb.CreateSessionResponse(session_id=session_id)


def session_response(info: SessionInfo) -> Any:
    return pb.GetSessionResponse(session=_session_to_proto(info))


def sessions_response(infos: Iterable[SessionInfo]) -> Any:
    return pb.ListSessionsResponse(sessions=[_session_to_proto(i) for i in infos])


def empty_response(kind: str) -> Any:
    """Response of Heartbeat, CloseSession or DeleteVariable."""
    return _EMPTY_RESPONSES[kind]()


_EMPTY_RESPONSES: Final = {
    "Heartbeat": pb.HeartbeatResponse,
    "CloseSession": pb.CloseSessionResponse,
    "DeleteVariable": pb.DeleteVariableResponse,
}


def record_response(kind: str, record: VariableRecord) -> Any:
    """Response of RegisterVariable, GetVariable, SetVariable or RollbackVariable."""
    return _RECORD_RESPONSES[kind](variable=record_to_proto(record))


_RECORD_RESPONSES: Final = {
    "RegisterVariable": pb.RegisterVariableResponse,
    "GetVariable": pb.GetVariableResponse,
    "SetVariable": pb.SetVariableResponse,
    "RollbackVariable": pb.RollbackVariableResponse,
}


def records_response(kind: str, records: Iterable[VariableRecord]) -> Any:
    """Response of GetVariables, ListVariables or GetHistory."""
    return _RECORDS_RESPONSES[kind](variables=[record_to_proto(r) for r in records])


_RECORDS_RESPONSES: Final = {
    "GetVariables": pb.GetVariablesResponse,
    "ListVariables": pb.ListVariablesResponse,
    "GetHistory": pb.GetHistoryResponse,
}


def update_response(results: Mapping[str, VariableRecord | errors.DspexError]) -> Any:
    out = []
    for name, result in results.items():
        if isinstance(result, errors.DspexError):
            error = pb.Error(code=result.code, message=result.message)
            error.details_json = details_json(result)
            out.append(pb.UpdateResult(name=name, error=error))
        else:
            out.append(pb.UpdateResult(name=name, variable=record_to_proto(result)))
    return pb.UpdateVariablesResponse(results=out)


def watch_started(revision: int, head_revision: int, queue_size: int, backlog: int) -> Any:
    started = pb.WatchStarted(
        revision=revision, head_revision=head_revision, queue_size=queue_size, backlog=backlog
    )
    return pb.WatchVariablesResponse(started=started)


def watch_heartbeat(server_time: float) -> Any:
    return pb.WatchVariablesResponse(heartbeat=pb.WatchHeartbeat(server_time=server_time))


_update_cache: dict[int, tuple[VariableUpdate, Any]] = {}


def watch_update(update: VariableUpdate) -> Any:
    """The stream message for ``update``, converted once for all watchers it fans out to."""
    cached = _update_cache.get(id(update))
    if cached is not None and cached[0] is update:
        return cached[1]
    message = pb.WatchVariablesResponse(
        update=pb.VariableUpdate(
            revision=update.revision,
            kind=update.kind,
            name=update.name,
            variable=record_to_proto(update.record),
        )
    )
    if len(_update_cache) >= _CACHE_LIMIT:
        _update_cache.clear()
    _update_cache[id(update)] = (update, message)
    return message
