"""What a caller can observe of a StateProvider, in a form two provider kinds can compare.

The differential state machine (tests/state/test_provider_diff.py) runs one sequence of verbs
on the reference kind and on another kind and compares these observations step by step. Only
what legitimately differs between two kinds is normalised away, each with its reason below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dspex import errors
from dspex._model import SessionInfo, VariableRecord, VariableUpdate
from dspex.state import VariableWatch

__all__ = ["Outcome", "attempt", "drain", "error", "observe", "record"]

Outcome = tuple[str, Any]
"""``("ok", observation)`` or ``("error", (class name, code, details))``."""

_LOCK_CLOCKS = ("acquired_at", "expires_at")
"""Lock fields read from each provider's own clock at call time: two providers called one after
the other never stamp the same instant, so only their presence is compared."""


def _value(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays: compare dtype, shape and elements, not identity
        return ("array", str(value.dtype), tuple(value.shape), tolist())
    if isinstance(value, Mapping):
        return {str(key): _value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_value(item) for item in value]
    return value


def _lock(lock: Mapping[str, Any] | None) -> Any:
    if lock is None:
        return None
    return {key: (key in lock) if key in _LOCK_CLOCKS else _value(item)
            for key, item in sorted(lock.items())}  # fmt: skip


def record(rec: VariableRecord) -> tuple[Any, ...]:
    """Everything of a record but ``updated_at`` (each provider's own clock at write time)."""
    spec = (rec.spec.type, _value(dict(rec.spec.constraints)))
    return (rec.name, spec, _value(rec.value), rec.version, rec.revision, rec.writer,
            _value(dict(rec.metadata)), rec.stale, _lock(rec.lock))  # fmt: skip


def _session(info: SessionInfo) -> tuple[Any, ...]:
    # created_at and last_heartbeat are each provider's own clock at call time.
    return (info.session_id, info.revision, info.variable_count, info.ttl, info.owner)


def _update(update: VariableUpdate) -> tuple[Any, ...]:
    return (update.revision, update.kind, update.name, record(update.record), update.batch)


def error(exc: BaseException) -> tuple[Any, ...]:
    """An error's class, stable code and details (the message is free text for people)."""
    if not isinstance(exc, errors.DspexError):
        return (type(exc).__name__, "not a dspex error", str(exc))
    return (type(exc).__name__, exc.code, _value(exc.details))


def observe(result: Any) -> Any:
    """A comparable form of any provider result."""
    if isinstance(result, VariableRecord):
        return record(result)
    if isinstance(result, VariableUpdate):
        return _update(result)
    if isinstance(result, SessionInfo):
        return _session(result)
    if isinstance(result, BaseException):
        return ("error", error(result))
    if isinstance(result, Mapping):
        return {key: observe(item) for key, item in result.items()}
    if isinstance(result, list | tuple):
        return [observe(item) for item in result]
    return _value(result)


def attempt(call: Callable[[], Any]) -> Outcome:
    """Run ``call``; its observed result, or its observed error (any exception is caught so a
    non-dspex error shows as a difference instead of ending the run)."""
    try:
        return ("ok", observe(call()))
    except Exception as exc:
        return ("error", error(exc))


def drain(
    watch: VariableWatch,
    seen: list[Any],
    *,
    want: int = 0,
    timeout: float = 5.0,
    more: float = 0.0,
) -> None:
    """Append what ``watch`` delivered to ``seen``: wait up to ``timeout`` until ``seen`` holds
    ``want`` updates, then take whatever else arrives within ``more`` seconds of each other."""
    if seen and seen[-1][0] == "error":  # the watch ended with that error: nothing follows
        return
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        if not _take(watch, seen, 0.05) and seen and seen[-1][0] == "error":
            return
    while _take(watch, seen, more):
        pass


def _take(watch: VariableWatch, seen: list[Any], timeout: float) -> bool:
    try:
        update = watch.poll(timeout)
    except Exception as exc:
        seen.append(("error", error(exc)))
        return False
    if update is None:
        return False
    seen.append(_update(update))
    return True
