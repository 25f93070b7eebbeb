"""Wire: the one table between dspex errors and gRPC status codes.

The server aborts a call with the status of the error's class and puts the stable error code
(``dspex-error-code``) and its JSON details (``dspex-error-details``) in the trailing metadata.
The client rebuilds the same class from that code; without it (a transport failure, a limit
enforced by grpc itself) it falls back to the status code. ``grpc.RpcError`` never escapes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple, NoReturn

import grpc

import dspex.errors as errors
from dspex.state.wire.channel import CONNECT_TIMEOUT_MS
from dspex.state.wire.status_details import DETAILS_BIN_KEY, status_details

__all__ = [
    "CODE_KEY",
    "DETAILS_KEY",
    "STATUS_TABLE",
    "abort",
    "error_from_rpc",
    "outcome_unknown",
    "status_for",
    "translate_rpc_errors",
]

_log = logging.getLogger("dspex.store")

CODE_KEY: Final = "dspex-error-code"
DETAILS_KEY: Final = "dspex-error-details"
_MAX_DETAILS_CHARS: Final = 2048
_MAX_MESSAGE_CHARS: Final = 2000

_S = grpc.StatusCode
STATUS_TABLE: Final[Mapping[type[errors.DspexError], grpc.StatusCode]] = {
    errors.DspexError: _S.UNKNOWN,
    errors.SessionError: _S.FAILED_PRECONDITION,
    errors.SessionNotFoundError: _S.NOT_FOUND,
    errors.SessionClosedError: _S.FAILED_PRECONDITION,
    errors.SessionExpiredError: _S.NOT_FOUND,
    errors.SessionExistsError: _S.ALREADY_EXISTS,
    errors.VariableError: _S.FAILED_PRECONDITION,
    errors.VariableNotFoundError: _S.NOT_FOUND,
    errors.VersionNotFoundError: _S.NOT_FOUND,
    errors.VariableExistsError: _S.ALREADY_EXISTS,
    errors.VariableAssignmentError: _S.FAILED_PRECONDITION,  # client-side; listed for completeness
    errors.VariableValueError: _S.INVALID_ARGUMENT,
    errors.VariableTypeError: _S.INVALID_ARGUMENT,
    errors.ConstraintError: _S.INVALID_ARGUMENT,
    errors.PatternError: _S.INVALID_ARGUMENT,
    errors.VersionConflictError: _S.ABORTED,
    errors.BatchUpdateError: _S.ABORTED,
    errors.LockedError: _S.FAILED_PRECONDITION,
    errors.CycleError: _S.FAILED_PRECONDITION,
    errors.WatchError: _S.ABORTED,
    errors.WatchLaggedError: _S.OUT_OF_RANGE,
    errors.AccessError: _S.PERMISSION_DENIED,
    errors.UnauthenticatedError: _S.UNAUTHENTICATED,
    errors.PermissionDeniedError: _S.PERMISSION_DENIED,
    errors.LimitExceededError: _S.RESOURCE_EXHAUSTED,
    errors.StoreError: _S.INTERNAL,
    errors.StoreUnavailableError: _S.UNAVAILABLE,
    errors.StoreProtocolError: _S.INVALID_ARGUMENT,
    errors.StoreDataError: _S.FAILED_PRECONDITION,
    errors.BindingError: _S.INVALID_ARGUMENT,
    errors.TuningError: _S.INVALID_ARGUMENT,  # client-side; listed for completeness
    errors.ToolError: _S.UNKNOWN,
    errors.ToolNotFoundError: _S.NOT_FOUND,
    errors.ToolExistsError: _S.ALREADY_EXISTS,
    errors.ToolArgumentsError: _S.INVALID_ARGUMENT,
    errors.ToolUnavailableError: _S.FAILED_PRECONDITION,
    errors.ToolTimeoutError: _S.DEADLINE_EXCEEDED,
    errors.WorkerError: _S.INTERNAL,
    errors.WorkerCrashedError: _S.INTERNAL,
    errors.WorkerSetupError: _S.FAILED_PRECONDITION,
    errors.WorkerTimeoutError: _S.DEADLINE_EXCEEDED,
}
"""Error class -> status. Every DspexError subclass is listed (a test checks totality)."""

_TRANSPORT: Final = frozenset({_S.UNAVAILABLE, _S.DEADLINE_EXCEEDED, _S.CANCELLED})


def _fallback_table() -> dict[grpc.StatusCode, type[errors.DspexError]]:
    """Statuses that only one class maps to: they identify it even without our metadata."""
    owners: dict[grpc.StatusCode, list[type[errors.DspexError]]] = {}
    for cls, status in STATUS_TABLE.items():
        owners.setdefault(status, []).append(cls)
    return {status: classes[0] for status, classes in owners.items() if len(classes) == 1}


_FALLBACK: Final = _fallback_table()
_status_cache: dict[type[errors.DspexError], grpc.StatusCode] = {}


def status_for(cls: type[errors.DspexError]) -> grpc.StatusCode:
    """Return the status for an error class (a class missing from the table uses its base's)."""
    status = _status_cache.get(cls)
    if status is None:
        base = next(c for c in cls.__mro__ if c in STATUS_TABLE)
        status = _status_cache[cls] = STATUS_TABLE[base]
    return status


def details_json(exc: errors.DspexError) -> str:
    """The JSON-serializable part of an error's details ("" when nothing is left)."""
    plain: dict[str, Any] = {}
    for key, value in exc.details.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        plain[key] = value
    text = json.dumps(plain) if plain else ""
    return text if len(text) <= _MAX_DETAILS_CHARS else ""


def error_from_code(code: str, message: str, details_text: str) -> errors.DspexError | None:
    """Rebuild a dspex error from its wire code, message and JSON details (None if unknown)."""
    cls = errors.error_class_for_code(code)
    if cls is None:
        return None
    try:
        details = json.loads(details_text) if details_text else {}
    except ValueError:
        details = {}
    if not isinstance(details, dict):
        details = {}
    return cls(message, **{str(k): v for k, v in details.items()})


async def abort(context: grpc.aio.ServicerContext, exc: errors.DspexError) -> NoReturn:
    """End the call with the status, code and details of ``exc``: the standard
    ``google.rpc.Status`` with an ``ErrorInfo``, and dspex's own trailers."""
    text = details_json(exc)
    status, message = status_for(type(exc)), exc.message[:_MAX_MESSAGE_CHARS]
    plain = json.loads(text) if text else {}
    metadata: tuple[tuple[str, str | bytes], ...] = (
        (CODE_KEY, exc.code),
        *(((DETAILS_KEY, text),) if text else ()),
        (DETAILS_BIN_KEY, status_details(status, message, exc.code, plain)),
    )
    context.set_trailing_metadata(metadata)
    await context.abort(status, message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def internal_error(exc: BaseException) -> errors.StoreError:
    """Log an unexpected server-side exception and turn it into a clear StoreError."""
    _log.exception("unexpected error in the session store")
    return errors.StoreError(
        f"internal error in the session store ({type(exc).__name__}: {exc}); "
        "this is a bug, please report it with the server log"
    )


def error_from_rpc(exc: grpc.RpcError, address: str) -> errors.DspexError:
    """Turn a failed call into the dspex error it stands for."""
    status = exc.code() if callable(getattr(exc, "code", None)) else None
    message = (exc.details() if callable(getattr(exc, "details", None)) else None) or ""
    trailing = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else ()
    found = {key: value for key, value in (trailing or ()) if key in (CODE_KEY, DETAILS_KEY)}
    if CODE_KEY in found:
        rebuilt = error_from_code(str(found[CODE_KEY]), message, str(found.get(DETAILS_KEY, "")))
        if rebuilt is not None:
            return rebuilt
    name = status.name if status is not None else "no status"
    special = _transport_trouble(status, message, address)
    if special is not None:
        return special
    if status in _TRANSPORT:
        return errors.StoreUnavailableError(
            f"session store {address} is unreachable ({name}: {message}); "
            "check the address and that `dspex serve` is running",
            address=address,
        )
    if status == _S.RESOURCE_EXHAUSTED:  # grpc's own message-size limit, before our code ran
        return errors.LimitExceededError(
            f"session store {address} refused the request: {message}; the request is larger "
            "than the store accepts (dspex serve --max-request-bytes); send less per call",
            address=address,
        )
    cls = _FALLBACK.get(status) if status is not None else None
    if cls is not None:
        return cls(f"session store {address}: {message}", address=address)
    return errors.StoreProtocolError(
        f"session store {address} answered {name}: {message!r}; "
        "client and server versions may differ",
        address=address,
    )


class _Trouble(NamedTuple):
    """A transport failure said as what it is: ``status`` with a message ``found`` matches."""

    status: grpc.StatusCode
    found: re.Pattern[str]
    error: type[errors.DspexError]
    text: str  # formatted with ``address`` and ``message``
    details: Mapping[str, Any] = {}


_TROUBLES: Final = (
    _Trouble(  # grpc's connect timeout expired: no HTTP/2 SETTINGS, or no TLS handshake reply
        _S.UNAVAILABLE,
        re.compile(r"before receiving SETTINGS frame|Handshake read failed \(Endpoint closing\)"),
        errors.StoreUnavailableError,
        "session store {address} accepted the connection but did not complete the gRPC "
        f"handshake within {CONNECT_TIMEOUT_MS / 1000:g} s ({{message}}); the server process is "
        "overloaded, paused or hung, or what listens there is not a dspex store",
    ),
    _Trouble(
        _S.UNAVAILABLE,
        re.compile(r"ssl|tls|handshake|certificate", re.IGNORECASE),
        errors.StoreUnavailableError,
        "TLS with session store {address} failed ({message}); check that client and server "
        "agree on TLS (grpcs:// needs a server started with --tls-cert/--tls-key, grpc:// a "
        "plaintext one) and that the client trusts the server's certificate (its CA) and sends "
        "a client certificate if the server requires one",
        {"tls": True},
    ),
    _Trouble(
        _S.DEADLINE_EXCEEDED,
        re.compile(""),
        errors.StoreUnavailableError,
        "session store {address} did not answer within the call timeout ({message}); it may be "
        "overloaded, paused or slow to reach: retry, or give the client a longer timeout "
        "(in Python, pass Session a SessionStoreProvider(ADDRESS, timeout=SECONDS) as its "
        "store; in the dspex CLI, --timeout SECONDS)",
    ),
    _Trouble(  # this process closed the client's channel while the call was in progress
        _S.CANCELLED,
        re.compile(re.escape("Channel closed")),
        errors.StoreUnavailableError,
        "the client of session store {address} was closed during the call ({message})",
        {"closed": True},
    ),
    _Trouble(
        _S.RESOURCE_EXHAUSTED,
        re.compile(re.escape("CLIENT: Received message larger than max")),
        errors.LimitExceededError,
        "the answer of session store {address} is larger than this client accepts ({message}); "
        "read less per call, or raise the client's max_message_bytes "
        "(SessionStoreProvider(..., max_message_bytes=N))",
        {"response": True},
    ),
    _Trouble(
        _S.RESOURCE_EXHAUSTED,
        re.compile(re.escape("Concurrent RPC limit exceeded")),
        errors.StoreUnavailableError,
        "session store {address} is overloaded: too many calls and streams at once ({message}); "
        "retry with backoff, spread the load over more servers, or raise "
        "dspex serve --max-concurrent-calls",
        {"overloaded": True},
    ),
)
"""A failed TLS handshake, a store that accepted the connection but never completed it, a call
that outlived its timeout, a call its own client's closing ended, an answer too large for this
client and an overloaded store."""


def _transport_trouble(
    status: grpc.StatusCode | None, message: str, address: str
) -> errors.DspexError | None:
    """The first of :data:`_TROUBLES` the failure matches, as its error (None: none)."""
    for trouble in _TROUBLES:
        if status == trouble.status and trouble.found.search(message):
            text = trouble.text.format(address=address, message=message)
            return trouble.error(text, address=address, **trouble.details)
    return None


def _unanswered(exc: grpc.RpcError, error: errors.DspexError) -> bool:
    """Whether a call may have reached the store and gone unanswered: its timeout passed, or
    this client's ``close()`` ended it."""
    status = exc.code() if callable(getattr(exc, "code", None)) else None
    return status == _S.DEADLINE_EXCEEDED or bool(error.details.get("closed"))


def outcome_unknown(error: errors.DspexError) -> errors.StoreUnavailableError:
    """``error`` for a write the store may have applied although no answer came back.

    A store stalled behind its engine (a paused Redis, a slow disk) applies a write it was sent
    once it wakes, after the client stopped waiting: so the write did not fail, its outcome is
    unknown, and retrying it blindly could apply it twice.
    """
    return errors.StoreUnavailableError(
        f"{error.message.rstrip('.')}. The write was sent, so the store may still apply it "
        "(or already did): its outcome is unknown. Read the variable back before retrying",
        **{**error.details, "outcome_unknown": True},
    )


class translate_rpc_errors:  # noqa: N801 - used like a function: `with translate_rpc_errors(a):`
    """Context manager re-raising any ``grpc.RpcError`` as the matching dspex error (and
    grpc's refusal of a call on a closed channel as ``StoreUnavailableError``, ``closed``).

    A class rather than ``@contextmanager``: it wraps every client call, and this costs a
    fraction of a generator-based manager.
    """

    __slots__ = ("address", "writes")

    def __init__(self, address: str, *, writes: bool = False) -> None:
        self.address = address
        self.writes = writes
        """Calls that change the store: one that was sent and then not answered (its timeout
        passed, or this client was closed meanwhile) may have been applied, and says so."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if isinstance(exc, grpc.RpcError):
            error = error_from_rpc(exc, self.address)
            if self.writes and _unanswered(exc, error):
                error = outcome_unknown(error)
            raise error from exc
        if _closed_channel(exc):
            # grpc refuses a call on a channel closed before it started: the client was closed
            raise errors.StoreUnavailableError.client_closed(self.address, f" ({exc})") from exc


def _closed_channel(exc: BaseException | None) -> bool:
    """Whether ``exc`` is grpc refusing a call on a closed channel: ``ValueError`` from the sync
    API, ``UsageError`` from grpc.aio."""
    text = str(exc)
    if isinstance(exc, ValueError):
        return "closed channel" in text
    return isinstance(exc, grpc.aio.UsageError) and "closed" in text
