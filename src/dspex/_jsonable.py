"""Plain-JSON views of values and records, shared by every front end (CLI, dashboard).

Pure functions over :mod:`dspex._model`: arrays become lists, and a lock shows its public part
(optimizer, lease end, progress), never its owner digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspex._model import VariableRecord

__all__ = ["jsonable", "lock_json", "record_json"]


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of a value (arrays and tuples as lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict | Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def lock_json(lock: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The public part of a lock (its owner digest left out), or None when unlocked."""
    if lock is None:
        return None
    return {str(k): jsonable(v) for k, v in lock.items() if k != "owner"}


def record_json(record: VariableRecord) -> dict[str, Any]:
    """One record as plain JSON."""
    return {
        "name": record.name,
        "type": record.type,
        "constraints": jsonable(dict(record.constraints)),
        "value": jsonable(record.value),
        "version": record.version,
        "revision": record.revision,
        "updated_at": record.updated_at,
        "writer": record.writer,
        "stale": record.stale,
        "lock": lock_json(record.lock),
    }
