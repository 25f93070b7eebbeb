"""Engines: SQLiteEngine, a MemoryEngine whose every change is written through to SQLite.

Reads are served from the in-memory image; each commit is one SQLite transaction that must
succeed before memory changes, so a failed write (disk full, unwritable file) changes nothing.
On open, sessions, records, bounded history, the change log, edges and revisions are reloaded.

Durability: WAL with ``synchronous=NORMAL``. A commit is appended to the WAL file with
``write(2)`` before ``COMMIT`` returns, so it sits in the kernel's page cache and survives the
server process dying in any way (``kill -9``, crash, OOM kill); SQLite replays the WAL on the
next open. Only an OS crash or power loss can lose the last commits (never corrupting the file);
``fsync=True`` (``synchronous=FULL``) closes that gap at the price of one disk flush per write.

One server per data directory: an exclusive ``flock`` on ``dspex.lock`` (holding the server's
pid) refuses a second server on the same directory. ``flock`` is advisory and local: do not put
the directory on a network file system shared by several machines (use Redis for that).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import dspex.errors as errors
from dspex._model import VariableRecord, VariableUpdate
from dspex.state.engines.codec import decode_record, encode_record
from dspex.state.engines.contract import SessionMeta
from dspex.state.engines.memory import MemoryEngine, _Space

__all__ = ["FORMAT_VERSION", "SQLiteEngine"]

FORMAT_VERSION: Final = 1
"""Layout of the data file; a file with a higher number was written by a newer dspex."""

DB_NAME: Final = "dspex.sqlite3"
LOCK_NAME: Final = "dspex.lock"

# WITHOUT ROWID: one b-tree per table, so a commit dirties fewer pages. A session's revision
# is the newest revision in its log (the log always keeps the last update), not a column that
# every commit would have to rewrite.
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, created_at REAL NOT NULL, last_heartbeat REAL NOT NULL,
    ttl REAL, owner TEXT NOT NULL, edges TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    session_id TEXT NOT NULL, name TEXT NOT NULL, pos INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (session_id, name, pos)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    session_id TEXT NOT NULL, revision INTEGER NOT NULL, kind TEXT NOT NULL,
    name TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (session_id, revision)) WITHOUT ROWID;
"""

_CLEAR_HISTORY: Final = "DELETE FROM history WHERE session_id = ?1 AND name = ?2"
_APPEND_HISTORY: Final = "INSERT INTO history VALUES (?1, ?2, ?3, ?4)"
_ANNOTATE_HISTORY: Final = (
    "UPDATE history SET record = ?3 WHERE session_id = ?1 AND name = ?2 AND pos = "
    "(SELECT MAX(pos) FROM history WHERE session_id = ?1 AND name = ?2)"
)
_TRIM_HISTORY: Final = (
    "DELETE FROM history WHERE session_id = ?1 AND name = ?2 AND pos <= (SELECT pos FROM "
    "history WHERE session_id = ?1 AND name = ?2 ORDER BY pos DESC LIMIT 1 OFFSET ?3)"
)
_APPEND_LOG: Final = "INSERT INTO log VALUES (?1, ?2, ?3, ?4, ?5)"
_TRIM_LOG: Final = "DELETE FROM log WHERE session_id = ?1 AND revision <= ?2"

_Statement = tuple[str, tuple[Any, ...]]


class SQLiteEngine(MemoryEngine):
    """Sessions kept in memory and written through to SQLite in ``directory``.

    Args:
        directory: the data directory (created if missing); holds ``dspex.sqlite3`` and
            ``dspex.lock``.
        history_size: versions kept per variable.
        log_size: updates kept per session for resuming watches.
        fsync: flush every commit to the disk (``synchronous=FULL``) so it also survives an
            OS crash or power loss; the default survives any death of the process.

    Raises:
        StoreDataError: the directory cannot be created or written, is locked by another
            server, or holds a data file from a newer dspex (nothing is touched then).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        history_size: int = 100,
        log_size: int = 10_000,
        fsync: bool = False,
    ) -> None:
        super().__init__(history_size=history_size, log_size=log_size)
        self.directory = Path(directory).expanduser().absolute()
        self.fsync = fsync
        self.path = self.directory / DB_NAME
        self._db_lock = threading.Lock()
        self._closed = False
        self._lock_fd = _lock_directory(self.directory)
        try:
            self._db = _open_database(self.path)
            try:
                _prepare(self._db, self.path, fsync)
                self._load()
            except BaseException:
                self._db.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- persistence hooks (called before memory changes; raising keeps memory as it was) --

    def _created(self, session_id: str, meta: SessionMeta) -> None:
        row = (session_id, meta.created_at, meta.last_heartbeat, meta.ttl, meta.owner, "[]")
        self._write([("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)", row)])

    def _touched(self, session_id: str, now: float) -> None:
        sql = "UPDATE sessions SET last_heartbeat = ?2 WHERE session_id = ?1"
        self._write([(sql, (session_id, now))])

    def _dropped(self, session_id: str) -> None:
        self._write(
            [
                (f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
                for table in ("history", "log", "sessions")
            ]
        )

    def _edges_changed(self, session_id: str, edges: list[tuple[str, str]]) -> None:
        sql = "UPDATE sessions SET edges = ?2 WHERE session_id = ?1"
        self._write([(sql, (session_id, json.dumps([list(edge) for edge in edges])))])

    def _persist(self, session_id: str, updates: list[VariableUpdate]) -> None:
        if not updates:
            return
        space = self._spaces[session_id]
        statements: list[_Statement] = []
        kept: dict[str, tuple[int | None, int]] = {}  # name -> (last kept version, count)
        for update in updates:
            name = update.name
            if name not in kept:
                history = space.history.get(name)
                kept[name] = (history[-1].version, len(history)) if history else (None, 0)
            kept[name] = self._history_statements(session_id, update, *kept[name], statements)
        last = updates[-1].revision
        if last > self.log_size:
            statements.append((_TRIM_LOG, (session_id, last - self.log_size)))
        self._write(statements)

    def _history_statements(
        self,
        session_id: str,
        update: VariableUpdate,
        last_version: int | None,
        count: int,
        out: list[_Statement],
    ) -> tuple[int | None, int]:
        """Append the statements for one update (same rule as ``_install``); new (version, n)."""
        name, record = update.name, update.record
        text = encode_record(record)
        out.append((_APPEND_LOG, (session_id, update.revision, update.kind, name, text)))
        if update.kind == "delete":
            out.append((_CLEAR_HISTORY, (session_id, name)))
            return None, 0
        if last_version is None or update.kind == "register":
            out.append((_CLEAR_HISTORY, (session_id, name)))
            out.append((_APPEND_HISTORY, (session_id, name, update.revision, text)))
            return record.version, 1
        if last_version == record.version:
            out.append((_ANNOTATE_HISTORY, (session_id, name, text)))
            return record.version, count
        out.append((_APPEND_HISTORY, (session_id, name, update.revision, text)))
        if count + 1 > self.history_size:
            out.append((_TRIM_HISTORY, (session_id, name, self.history_size)))
        return record.version, min(count + 1, self.history_size)

    def _write(self, statements: Sequence[_Statement]) -> None:
        """Run ``statements`` in one transaction: all of them are applied, or none."""
        with self._db_lock:
            if self._closed:
                raise errors.StoreDataError(
                    f"the data directory {self.directory} was closed; reopen the store",
                    directory=str(self.directory),
                )
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise _data_error(self.path, exc, "the change was not applied") from exc

    # -- loading ----------------------------------------------------------------------------

    def _load(self) -> None:
        """Rebuild the memory image from the data file."""
        try:
            self._load_sessions()
            by_revision = self._load_history()
            self._load_log(by_revision)
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            raise _data_error(self.path, exc, "the data file could not be read") from exc

    def _load_sessions(self) -> None:
        rows = self._db.execute(
            "SELECT session_id, created_at, last_heartbeat, ttl, owner, edges FROM sessions"
        )
        for session_id, created_at, heartbeat, ttl, owner, edges in rows:
            space = _Space(ttl, owner, self.log_size)
            space.created_at, space.last_heartbeat = created_at, heartbeat
            space.edges = [(a, b) for a, b in json.loads(edges)]
            self._spaces[session_id] = space
        revisions = "SELECT session_id, MAX(revision) FROM log GROUP BY session_id"
        for session_id, revision in self._db.execute(revisions):
            self._spaces[session_id].revision = revision

    def _load_history(self) -> dict[tuple[str, str, int], VariableRecord]:
        """Load kept versions; returns them by (session, name, revision) to share with the log."""
        by_revision: dict[tuple[str, str, int], VariableRecord] = {}
        rows = self._db.execute(
            "SELECT session_id, name, record FROM history ORDER BY session_id, name, pos"
        )
        for session_id, name, text in rows:
            space = self._spaces[session_id]
            record = decode_record(text)
            kept = space.history.get(name)
            if kept is None:
                kept = space.history[name] = deque(maxlen=self.history_size)
            kept.append(record)
            space.variables[name] = record
            by_revision[session_id, name, record.revision] = record
        return by_revision

    def _load_log(self, by_revision: dict[tuple[str, str, int], VariableRecord]) -> None:
        rows = self._db.execute(
            "SELECT session_id, revision, kind, name, record FROM log "
            "ORDER BY session_id, revision"
        )
        for session_id, revision, kind, name, text in rows:
            record = by_revision.get((session_id, name, revision))
            if record is None or kind == "delete":
                record = decode_record(text)
            self._spaces[session_id].log.append(VariableUpdate(revision, kind, name, record))

    @property
    def blocks(self) -> bool:
        """Reads come from the memory image; a commit blocks only when it flushes to disk."""
        return self.fsync

    def close(self) -> None:
        """Close the data file and release the directory lock. Idempotent."""
        with self._db_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            os.close(self._lock_fd)
        super().close()


def _data_error(path: Path, exc: BaseException, consequence: str) -> errors.StoreDataError:
    """A clear error for a failed SQLite operation on ``path``."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "disk is full" in str(exc):
        what = f"the disk holding {path.parent} is full ({exc}); free space or move --data"
    elif name in ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM") or "readonly" in str(exc):
        what = f"the data file {path} cannot be written ({exc}); check the directory's permissions"
    elif name == "SQLITE_NOTADB":
        what = f"{path} is not a dspex data file ({exc}); move it away or choose another --data"
    else:
        what = f"the data file {path} failed: {exc}"
    return errors.StoreDataError(f"{what}; {consequence}", directory=str(path.parent))


def _lock_directory(directory: Path) -> int:
    """Create ``directory`` if needed and lock it for this process; returns the lock's fd."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise errors.StoreDataError(
            f"cannot use {directory} as a data directory: {exc.strerror or exc}; "
            "choose a writable directory for --data",
            directory=str(directory),
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise errors.StoreDataError(
            f"the data directory {directory} is locked by another dspex server (pid {holder}); "
            "stop that server or give this one another --data directory",
            directory=str(directory),
            holder=holder,
        ) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # e.g. ENOSPC: the disk is full
        os.close(fd)
        raise errors.StoreDataError(
            f"cannot use {directory} as a data directory: {exc.strerror or exc}; free space "
            "or choose another --data directory",
            directory=str(directory),
        ) from exc
    return fd


def _open_database(path: Path) -> sqlite3.Connection:
    """Open the data file, refusing one written by a newer dspex before anything is written."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except sqlite3.Error as exc:
        raise _data_error(path, exc, "nothing was changed") from exc
    try:
        version = _format_version(db)
    except sqlite3.Error as exc:
        db.close()
        raise _data_error(path, exc, "nothing was changed") from exc
    if version is not None and version > FORMAT_VERSION:
        db.close()
        raise errors.StoreDataError(
            f"the data file {path} has format version {version}, written by a newer dspex; "
            f"this dspex reads format {FORMAT_VERSION} at most: upgrade dspex (the file was "
            "not touched)",
            directory=str(path.parent),
            format_version=version,
        )
    return db


def _format_version(db: sqlite3.Connection) -> int | None:
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    return None if row is None else int(row[0])


def _prepare(db: sqlite3.Connection, path: Path, fsync: bool) -> None:
    """Switch to WAL, create the tables and stamp the format version (new files only)."""
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
        db.execute("BEGIN IMMEDIATE")
        _run_script(db, _SCHEMA.split(";"))
        db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),)
        )
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise _data_error(path, exc, "nothing was changed") from exc


def _run_script(db: sqlite3.Connection, statements: Iterable[str]) -> None:
    for statement in statements:
        if statement.strip():
            db.execute(statement)
