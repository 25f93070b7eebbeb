"""Client side: requests out, results in (``SessionStoreProvider``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from google.protobuf.message import DecodeError

import dspex.errors as errors
from dspex._model import (
    BatchMark,
    SessionInfo,
    VariableRecord,
    VariableSpec,
    VariableUpdate,
    plain_metadata,
)
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex.state.wire.status import error_from_code
from dspex.state.wire.values import (
    encode_value,
    mapping_json,
    record_from_proto,
    records_from_proto,
    session_from_proto,
    spec_to_json,
)


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


def list_sessions_request(page_token: str = "") -> Any:
    return pb.ListSessionsRequest(page_token=page_token)


def session_result(response: Any) -> SessionInfo:
    return session_from_proto(response.session)


def sessions_result(response: Any) -> tuple[list[SessionInfo], str]:
    """One page of sessions and the next page's token ("" after the last)."""
    return [session_from_proto(m) for m in response.sessions], str(response.next_page_token)


def register_variable_request(
    session_id: str, name: str, spec: VariableSpec, value: Any, metadata: Mapping[str, Any] | None
) -> Any:
    metadata_json = _encode_metadata(metadata)  # first, as a local provider checks it
    return pb.RegisterVariableRequest(
        session_id=session_id,
        name=name,
        type=spec.type,
        constraints_json=spec_to_json(spec),
        value=encode_value(value, name),
        metadata_json=metadata_json,
    )


def _encode_metadata(metadata: Mapping[str, Any] | None) -> str:
    return mapping_json(plain_metadata(metadata))  # refused here as in a local session


def variable_request(kind: str, session_id: str, name: str) -> Any:
    """Request naming a session and a variable: DeleteVariable (GetVariable's request is sent
    encoded, see :func:`get_variable_request`)."""
    return _VARIABLE_REQUESTS[kind](session_id=session_id, name=name)


_VARIABLE_REQUESTS: Final = {
    "DeleteVariable": pb.DeleteVariableRequest,
}

_CACHE_LIMIT: Final = 4096
"""Most entries of each encoding cache below (cleared when full)."""
_CACHED_BYTES: Final = 4096
"""Largest request or response the caches below keep."""
_get_requests: dict[tuple[str, str], bytes] = {}
_get_records: dict[bytes, VariableRecord] = {}


def get_variable_request(session_id: str, name: str) -> bytes:
    """The encoded GetVariable request: built once per (session, name) and reused, since a hot
    read sends the same bytes again and again."""
    key = (session_id, name)
    data = _get_requests.get(key)
    if data is None:
        data = pb.GetVariableRequest(session_id=session_id, name=name).SerializeToString()
        _remember(_get_requests, key, data, len(data))
    return data


def get_variable_result(data: bytes) -> VariableRecord:
    """The record of an encoded GetVariable response.

    Records are immutable, and the bytes say everything about one (version, revision, time,
    value), so a response identical to an earlier one (the variable did not change) gives the
    record decoded then, instead of decoding it again.

    Raises:
        StoreProtocolError: the bytes are not a GetVariableResponse.
    """
    record = _get_records.get(data)
    if record is not None:
        return record
    try:
        response = pb.GetVariableResponse.FromString(data)
    except DecodeError as exc:
        raise errors.StoreProtocolError(
            f"the session store sent a malformed GetVariable response ({exc}); "
            "client and server versions may differ"
        ) from exc
    record = record_from_proto(response.variable)
    _remember(_get_records, data, record, len(data))
    return record


def _remember(cache: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """Keep ``value`` under ``key`` if its encoding (``size`` bytes) is small enough; a full
    cache is cleared first."""
    if size <= _CACHED_BYTES:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value


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


def unsendable_values(values: Mapping[str, Any]) -> dict[str, VariableRecord | errors.DspexError]:
    """The ``VariableTypeError`` of each value in ``values`` that cannot be encoded."""
    refused: dict[str, VariableRecord | errors.DspexError] = {}
    for name, value in values.items():
        try:
            encode_value(value, name)
        except errors.VariableTypeError as exc:
            refused[name] = exc
    return refused


def list_variables_request(session_id: str, pattern: str) -> Any:
    return pb.ListVariablesRequest(session_id=session_id, pattern=pattern)


def get_history_request(session_id: str, name: str, limit: int | None) -> Any:
    request = pb.GetHistoryRequest(session_id=session_id, name=name)
    if limit is not None:
        request.limit = limit
    return request


def rollback_variable_request(session_id: str, name: str, version: int) -> Any:
    return pb.RollbackVariableRequest(session_id=session_id, name=name, version=version)


def dependency_request(session_id: str, upstream: str, downstream: str) -> Any:
    return pb.AddDependencyRequest(session_id=session_id, upstream=upstream, downstream=downstream)


def dependents_request(session_id: str, name: str) -> Any:
    return pb.GetDependentsRequest(session_id=session_id, name=name)


def dependencies_request(session_id: str) -> Any:
    return pb.GetDependenciesRequest(session_id=session_id)


def names_result(response: Any) -> list[str]:
    """The names of a GetDependents response, in order."""
    return list(response.names)


def edges_result(response: Any) -> list[tuple[str, str]]:
    """The edges of a GetDependencies response, in order."""
    return [(edge.upstream, edge.downstream) for edge in response.edges]


def acquire_lock_request(
    session_id: str,
    name: str,
    owner: str,
    *,
    optimizer_id: str,
    lease: float,
    policy: str,
    timeout: float | None,
) -> Any:
    request = pb.AcquireLockRequest(
        session_id=session_id, name=name, owner=owner, optimizer_id=optimizer_id,
        lease=lease, policy=policy,
    )  # fmt: skip
    if timeout is not None:
        request.timeout = timeout
    return request


def release_lock_request(session_id: str, name: str, owner: str) -> Any:
    return pb.ReleaseLockRequest(session_id=session_id, name=name, owner=owner)


def renew_lock_request(
    session_id: str, name: str, owner: str, progress: Mapping[str, Any] | None
) -> Any:
    try:
        progress_json = mapping_json(progress)
    except (TypeError, ValueError) as exc:
        raise errors.VariableValueError(
            f"lock progress for {name!r} must be JSON-serializable ({exc})", name=name
        ) from exc
    return pb.RenewLockRequest(
        session_id=session_id, name=name, owner=owner, progress_json=progress_json
    )


def hold_locks_request() -> Any:
    return pb.HoldLocksRequest()


def hold_locks_events(message: Any) -> list[tuple[str, Any]]:
    """[("started", holder_id)] for the first HoldLocks message, [("heartbeat", time)] after."""
    if message.holder_id:
        return [("started", str(message.holder_id))]
    return [("heartbeat", message.server_time)]


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
    session_id: str,
    names: Collection[str],
    after_revision: int | None,
    include_initial: bool,
    linger: float = 0.0,
) -> Any:
    request = pb.WatchVariablesRequest(
        session_id=session_id,
        names=list(names),
        include_initial=include_initial,
        coalesce=True,
        linger_ms=round(linger * 1000),
    )
    if after_revision is not None:
        request.after_revision = after_revision
    return request


def watch_events(message: Any) -> list[tuple[str, Any]]:
    """The events of one stream message: ("started", (revision, head, queue_size, backlog)),
    ("update", VariableUpdate) or ("heartbeat", server_time); a ``WatchUpdates`` message (the
    client asks for them with ``coalesce``) is one "update" event per update, in order."""
    event = message.WhichOneof("event")
    if event == "update":
        return [("update", _update(message.update))]
    if event == "updates":
        return [("update", _update(update)) for update in message.updates.updates]
    return [_watch_event(message, event)]


def _update(update: Any) -> VariableUpdate:
    batch = None
    if update.batch_last:
        batch = BatchMark(update.batch_first, update.batch_last, update.batch_end)
    return VariableUpdate(
        update.revision, update.kind, update.name, record_from_proto(update.variable), batch
    )


def _watch_event(message: Any, event: str | None) -> tuple[str, Any]:
    if event == "started":
        started = message.started
        return "started", (
            started.revision,
            started.head_revision,
            started.queue_size,
            started.backlog,
        )
    return "heartbeat", message.heartbeat.server_time
