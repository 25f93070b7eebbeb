"""How the store CLI prints records: one JSON object per record, or one readable line.

Both show whether a record is ``stale`` (an upstream changed since it was written) and the
public state of its optimization lock (optimizer, lease end, progress; never the owner token).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from dspex._model import VariableRecord

__all__ = ["jsonable", "lock_json", "record_json", "record_line"]

_VALUE_CHARS = 60


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


def record_line(record: VariableRecord) -> str:
    """One record as a readable line: name, type, version, value, writer, stale and lock."""
    value = json.dumps(jsonable(record.value))
    if len(value) > _VALUE_CHARS:
        value = value[: _VALUE_CHARS - 3] + "..."
    line = f"{record.name}  {record.type}  v{record.version}  = {value}  (by {record.writer})"
    if record.stale:
        line += "  [stale]"
    if record.lock is not None:
        line += f"  [{_lock_text(record.lock)}]"
    return line


def _lock_text(lock: Mapping[str, Any]) -> str:
    left = lock.get("expires_at", 0.0) - time.time()
    text = f"locked by {lock.get('optimizer_id', '?')}, lease {max(left, 0.0):.0f}s left"
    progress = lock.get("progress") or {}
    if progress:
        text += ", progress " + json.dumps(jsonable(progress), sort_keys=True)
    return text
