"""Server side: requests in, responses out (the servicer)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

import dspex.errors as errors
from dspex._model import SessionInfo, VariableRecord, VariableSpec, VariableUpdate
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex.state.server.handlers import service_methods
from dspex.state.wire.status import details_json
from dspex.state.wire.values import (
    decode_value,
    json_object,
    record_to_proto,
    session_to_proto,
    spec_from_json,
)

_CACHE_LIMIT: Final = 4096


def read_ping(request: Any) -> str:
    return str(request.message)


def read_create_session(request: Any) -> tuple[str | None, float | None]:
    return request.session_id or None, request.ttl if request.HasField("ttl") else None


def read_session_id(request: Any) -> str:
    return str(request.session_id)


MAX_SESSIONS_PAGE: Final = 1000
"""Most sessions one ListSessions response carries (a bounded response, however many)."""


def read_list_sessions(request: Any) -> tuple[int, str]:
    """(page size within 1..MAX_SESSIONS_PAGE, page token) of a ListSessions request."""
    size = int(request.page_size)
    return (size if 0 < size < MAX_SESSIONS_PAGE else MAX_SESSIONS_PAGE), str(request.page_token)


def sessions_page(
    infos: Iterable[SessionInfo], size: int, token: str
) -> tuple[list[SessionInfo], str]:
    """The page of ``infos`` (oldest first) after ``token``, and the next page's token.

    Raises:
        StoreProtocolError: the token is not one this server handed out.
    """
    ordered = sorted(infos, key=lambda i: (i.created_at, i.session_id))
    if token:
        created, sep, after = token.partition("|")
        try:
            start = (float(created), after)
        except ValueError:
            start = None
        if not sep or start is None:
            raise errors.StoreProtocolError(
                f"ListSessions page_token {token[:60]!r} is not one this store handed out; "
                "start again with an empty page_token"
            )
        ordered = [i for i in ordered if (i.created_at, i.session_id) > start]
    page = ordered[:size]
    more = len(ordered) > size
    return page, (f"{page[-1].created_at!r}|{page[-1].session_id}" if more else "")


def read_variable(request: Any) -> tuple[str, str]:
    """(session_id, name) of a request naming one variable."""
    return request.session_id, request.name


def read_register(
    request: Any, max_bytes: int | None
) -> tuple[str, str, VariableSpec, Any, dict[str, Any]]:
    spec = spec_from_json(request.type, request.constraints_json)
    value = decode_value(request.value, request.name, max_bytes)
    metadata = json_object(request.metadata_json, "metadata_json", errors.VariableValueError)
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


MAX_LINGER_MS: Final = 1000
"""Longest a watch stream may ask the store to hold its news (``linger_ms``)."""


def read_watch(request: Any) -> tuple[str, list[str], int | None, bool, bool, float]:
    """(session_id, names, after_revision, include_initial, coalesce, linger seconds) of a
    WatchVariables.

    Raises:
        ConstraintError: ``linger_ms`` is over :data:`MAX_LINGER_MS`.
    """
    after = request.after_revision if request.HasField("after_revision") else None
    if request.linger_ms > MAX_LINGER_MS:
        raise errors.ConstraintError(
            f"linger_ms must be at most {MAX_LINGER_MS} (a watch holding news longer is not a "
            f"watch), got {request.linger_ms}"
        )
    return (
        request.session_id, list(request.names), after, request.include_initial,
        request.coalesce, request.linger_ms / 1000,
    )  # fmt: skip


def read_dependency(request: Any) -> tuple[str, str, str]:
    """(session_id, upstream, downstream) of an AddDependency request."""
    return request.session_id, request.upstream, request.downstream


def read_acquire(request: Any) -> tuple[str, str, str, str, float, str, float | None]:
    """(session_id, name, owner, optimizer_id, lease, policy, timeout) of an AcquireLock.

    Raises:
        StoreProtocolError: no owner token was given.
        VariableValueError: the lease is not finite, or the timeout is negative or NaN.
    """
    timeout = request.timeout if request.HasField("timeout") else None
    owner = _owner(request)
    if not math.isfinite(request.lease) or (timeout is not None and not timeout >= 0):
        raise errors.VariableValueError(
            f"lock on {request.name!r}: lease must be a finite positive number of seconds and "
            f"timeout a non-negative one (got lease={request.lease!r}, timeout={timeout!r})",
            name=request.name,
        )
    if timeout is not None and math.isinf(timeout):
        timeout = None  # wait as long as the caller does
    policy = request.policy or "fail"
    return (
        request.session_id, request.name, owner, request.optimizer_id, request.lease, policy,
        timeout,
    )  # fmt: skip


def read_release(request: Any) -> tuple[str, str, str]:
    """(session_id, name, owner) of a ReleaseLock request."""
    return request.session_id, request.name, _owner(request)


def read_renew(request: Any) -> tuple[str, str, str, dict[str, Any]]:
    """(session_id, name, owner, progress) of a RenewLock request.

    Raises:
        VariableValueError: progress_json is not a JSON object.
    """
    progress = json_object(request.progress_json, "progress_json", errors.VariableValueError)
    return request.session_id, request.name, _owner(request), progress


def _owner(request: Any) -> str:
    if not request.owner:
        raise errors.StoreProtocolError(
            "malformed request: a lock call needs the holder's owner token (non-empty)",
            name=request.name,
        )
    return str(request.owner)


def dependents_response(names: Iterable[str]) -> Any:
    return pb.GetDependentsResponse(names=list(names))


def dependencies_response(edges: Iterable[tuple[str, str]]) -> Any:
    return pb.GetDependenciesResponse(
        edges=[pb.Dependency(upstream=up, downstream=down) for up, down in edges]
    )


def hold_locks_message(holder_id: str, server_time: float) -> Any:
    """A HoldLocks stream message: the holder id first, then heartbeats (holder_id "")."""
    return pb.HoldLocksResponse(holder_id=holder_id, server_time=server_time)


def ping_response(message: str, server_time: float) -> Any:
    return pb.PingResponse(message=message, server_time=server_time)


def create_session_response(session_id: str) -> Any:
    return pb.CreateSessionResponse(session_id=session_id)


def session_response(info: SessionInfo) -> Any:
    return pb.GetSessionResponse(session=session_to_proto(info))


def sessions_response(infos: Iterable[SessionInfo], next_page_token: str = "") -> Any:
    return pb.ListSessionsResponse(
        sessions=[session_to_proto(i) for i in infos], next_page_token=next_page_token
    )


def empty_response(kind: str) -> Any:
    """Response of Heartbeat, CloseSession, DeleteVariable or AddDependency."""
    return _EMPTY_RESPONSES[kind]()


_EMPTY_RESPONSES: Final = {
    "Heartbeat": pb.HeartbeatResponse,
    "CloseSession": pb.CloseSessionResponse,
    "DeleteVariable": pb.DeleteVariableResponse,
    "AddDependency": pb.AddDependencyResponse,
}


def record_response(kind: str, record: VariableRecord) -> bytes:
    """The encoded response of a call returning one record (Register/Get/Set/RollbackVariable,
    locks), sent as it is (see :func:`method_table`). A small record's response is encoded
    once and reused while the record is current: records are immutable, and a hot
    ``GetVariable`` returns the same one again and again."""
    key = (kind, id(record))
    cached = _response_cache.get(key)
    if cached is not None and cached[0] is record:
        return cached[1]
    data: bytes = _RECORD_RESPONSES[kind](variable=record_to_proto(record)).SerializeToString()
    if len(data) <= _CACHED_BYTES:
        if len(_response_cache) >= _CACHE_LIMIT:
            _response_cache.clear()
        _response_cache[key] = (record, data)
    return data


_CACHED_BYTES: Final = 4096
"""Largest response :func:`record_response` keeps for reuse."""
_response_cache: dict[tuple[str, int], tuple[VariableRecord, bytes]] = {}


_RECORD_RESPONSES: Final = {
    "RegisterVariable": pb.RegisterVariableResponse,
    "GetVariable": pb.GetVariableResponse,
    "SetVariable": pb.SetVariableResponse,
    "RollbackVariable": pb.RollbackVariableResponse,
    "AcquireLock": pb.AcquireLockResponse,
    "ReleaseLock": pb.ReleaseLockResponse,
    "RenewLock": pb.RenewLockResponse,
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
    if update.batch is not None:
        first, last, end = update.batch
        message.update.batch_first, message.update.batch_last = first, last
        message.update.batch_end = end
    if len(_update_cache) >= _CACHE_LIMIT:
        _update_cache.clear()
    _update_cache[id(update)] = (update, message)
    return message


def method_table() -> list[tuple[str, bool, Any, Any]]:
    """``(name, server_streaming, parse, serialize)`` for every ``SessionStore`` RPC.

    ``WatchVariables`` streams write messages encoded once for all of them (bytes), and the
    RPCs answering one record return it encoded (:func:`record_response`), so their responses
    are sent as they are.
    """
    return [
        (name, streaming, parse, encoded if name in _ENCODED else serialize)
        for name, streaming, parse, serialize in service_methods(pb, "SessionStore")
    ]


_ENCODED: Final = frozenset({"WatchVariables", *_RECORD_RESPONSES})
"""The RPCs whose servicer methods return encoded responses (bytes)."""


def encoded(message: bytes) -> bytes:
    """The response serializer of pre-encoded messages: the bytes themselves."""
    return message


def watch_message(payload: bytes) -> Any:
    """The ``WatchVariablesResponse`` a pre-encoded stream message holds."""
    return pb.WatchVariablesResponse.FromString(payload)
