"""Layer 2: storage engines under the store semantics (memory; SQLite and Redis load lazily)."""

from __future__ import annotations

from dspex.state._engines._base import (
    Engine,
    EngineConflict,
    EngineListener,
    LogCompacted,
    SessionMeta,
    UnknownSession,
    Write,
)
from dspex.state._engines._memory import MemoryEngine

__all__ = [
    "Engine",
    "EngineConflict",
    "EngineListener",
    "LogCompacted",
    "MemoryEngine",
    "SessionMeta",
    "UnknownSession",
    "Write",
]
