"""Engines: storage under the store semantics (memory; SQLite and Redis load lazily).

``open_engine(spec)`` maps a store spec to an engine; ``sqlite3`` and ``redis`` are imported
only when their engine is asked for, so ``import dspex`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dspex.state.engines.contract import (
    Engine,
    EngineConflict,
    EngineListener,
    LogCompacted,
    SessionMeta,
    UnknownSession,
    Write,
    write_deadline,
)
from dspex.state.engines.memory import MemoryEngine

if TYPE_CHECKING:
    from dspex.state.engines.redis import RedisEngine
    from dspex.state.engines.sqlite import SQLiteEngine

__all__ = [
    "Engine",
    "EngineConflict",
    "EngineListener",
    "LogCompacted",
    "MemoryEngine",
    "RedisEngine",
    "SQLiteEngine",
    "SessionMeta",
    "UnknownSession",
    "Write",
    "open_engine",
    "write_deadline",
]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_engine(spec: str, *, history_size: int = 100, log_size: int = 10_000) -> Engine:
    """Open the engine named by ``spec``.

    Args:
        spec: ``"memory"``; ``"redis://HOST:PORT/DB"`` (also ``rediss://``, ``unix://``) for
            Redis; ``"sqlite:///DIR"`` or a directory path for SQLite.
        history_size: versions kept per variable.
        log_size: updates kept per session for resuming watches.

    Raises:
        StoreUnavailableError: Redis cannot be reached.
        StoreDataError: the SQLite directory is unusable, locked or from a newer dspex.
    """
    if spec == "memory":
        return MemoryEngine(history_size=history_size, log_size=log_size)
    if spec.startswith(_REDIS_SCHEMES):
        from dspex.state.engines.redis import RedisEngine

        return RedisEngine(spec, history_size=history_size, log_size=log_size)
    from dspex.state.engines.sqlite import SQLiteEngine

    directory = spec.removeprefix("sqlite://")
    return SQLiteEngine(directory, history_size=history_size, log_size=log_size)


def __getattr__(name: str) -> Any:
    if name == "SQLiteEngine":
        from dspex.state.engines.sqlite import SQLiteEngine

        return SQLiteEngine
    if name == "RedisEngine":
        from dspex.state.engines.redis import RedisEngine

        return RedisEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
