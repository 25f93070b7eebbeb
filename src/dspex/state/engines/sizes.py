"""Engines: how many bytes a value takes, and the error for reaching a byte limit.

Engines bound history and budgets in bytes, and the core's limits check sizes the same way, so
both sides use these (the core imports them from here: engines never import the core).
"""

from __future__ import annotations

import json
from typing import Any, Final

import dspex.errors as errors
from dspex._model import VariableRecord, VariableSpec

__all__ = [
    "HISTORY_BYTES",
    "LOG_BYTES",
    "SIZED_TYPES",
    "budget_exceeded",
    "exceeded",
    "record_bytes",
    "value_size",
]

HISTORY_BYTES: Final = 256 * 1024 * 1024
"""Default bound on the bytes of values kept in one variable's history."""
LOG_BYTES: Final = 1024 * 1024 * 1024
"""Default bound on the bytes of values kept in one session's change log."""

SIZED_TYPES = frozenset({"string", "module", "json", "tensor", "embedding"})
"""Value types whose size depends on the value (the others take a few bytes)."""


def exceeded(what: str, limit: int, hint: str) -> errors.LimitExceededError:
    """The error for reaching ``limit`` on ``what``; ``hint`` says what to do."""
    return errors.LimitExceededError(
        f"limit reached: {what} (limit {limit}); {hint}", limit=limit, what=what
    )


def budget_exceeded(session_id: str | None, limit: int) -> errors.LimitExceededError:
    """The error for a write refused by the byte budget of session ``session_id`` (None: of
    the whole store), the same from every engine (RESOURCE_EXHAUSTED on the wire)."""
    what = "the whole store" if session_id is None else f"session {session_id!r}"
    hint = "delete variables or sessions you no longer need, or keep large data elsewhere"
    return exceeded(f"bytes kept in {what}", limit, hint)


def record_bytes(record: VariableRecord) -> int:
    """Bytes a record's value takes (0 for numbers and booleans: they are a few bytes).

    Engines compute it once per record, when they build it, and keep it beside the record's
    history and change-log entries; bounds and budgets read the kept sizes.
    """
    spec = record.spec
    return value_size(spec, record.value) if spec.type in SIZED_TYPES else 0


def value_size(spec: VariableSpec, value: Any) -> int:
    """Encoded size in bytes of a canonical value (JSON text, or raw array bytes)."""
    if spec.type == "tensor":
        return int(value.nbytes)
    if spec.type in ("string", "module"):
        return len(value.encode())
    if spec.type == "embedding":
        return 8 * len(value)
    return len(json.dumps(value, separators=(",", ":")).encode())
