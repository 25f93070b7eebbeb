"""How the store CLI prints records: one JSON object per record, or one readable line.

Both show whether a record is ``stale`` (an upstream changed since it was written) and the
public state of its optimization lock (optimizer, lease end, progress; never the owner token).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from dspex._jsonable import jsonable, lock_json, record_json
from dspex._model import VariableRecord

__all__ = ["jsonable", "lock_json", "record_json", "record_line"]

_VALUE_CHARS = 60


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
