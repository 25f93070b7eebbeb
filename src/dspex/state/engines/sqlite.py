"""Engines: SQLiteEngine, a MemoryEngine whose every change is written through to SQLite.

Reads are served from the in-memory image; each commit is one SQLite transaction that must
succeed before memory changes, so a failed write (disk full, unwritable file) changes nothing.
On open, sessions, records, bounded history, the change log, edges and revisions are reloaded.

Durability: WAL with ``synchronous=NORMAL``. A commit is appended to the WAL file with
``write(2)`` before ``COMMIT`` returns, so it sits in the kernel's page cache and survives the
server process dying in any way (``kill -9``, crash, OOM kill); SQLite replays the WAL on the
next open. Only an OS crash or power loss can lose the last commits (never corrupting the file);
``fsync=True`` (``synchronous=FULL``) closes that gap: ``COMMIT`` returns only once the WAL is
flushed to the disk.

Group commit: writers queue their changes, and the first to find no commit running commits
every queued change in one transaction, so with ``fsync`` one disk flush covers all of them;
while it runs, the next writers queue up for the following one (tickets:
``sqlite_tickets``). A server on an event loop queues a set with :meth:`SQLiteEngine.commit_later`
instead: checked and planned on the loop, committed by the engine's committer thread, and
acknowledged by one loop callback per batch, so a set waiting for the disk holds no thread.
Either way a change is installed in memory, shown to watchers and acknowledged only after its
transaction committed (and, with ``fsync``, was flushed). The ``meta`` table counts changes,
transactions (``commits``) and, with ``fsync``, flushes (``flushes``): see
:meth:`SQLiteEngine.stats`.

Damage and loss are detected, never served (see ``_sqlite_seal``): records carry checksums
checked at start with SQLite's own page check, and the seal file ``dspex.seal`` counts the
acknowledged changes, so a data file that lost some (damaged or deleted WAL, restored copy) is
refused at start unless ``accept_loss`` begins a new store generation.

A data file or write-ahead log removed or replaced while the server runs (the directory deleted
or moved away, a "cleanup" of ``-wal`` files) is noticed before each commit: SQLite would go on
writing to the files it holds open, which nobody can reach any more, so every write would be
acknowledged and then lost at the next start. Such writes are refused instead
(``StoreDataError``) until the files are back where they were.

One server per data directory: an exclusive ``flock`` on ``dspex.lock`` (holding the server's
pid) refuses a second server on the same directory. ``flock`` is advisory and local: do not put
the directory on a network file system shared by several machines (use Redis for that).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import dspex.errors as errors
from dspex._model import VariableRecord, VariableUpdate
from dspex.state.engines.codec import decode_record, encode_record
from dspex.state.engines.contract import (
    SessionMeta,
    UnknownSession,
    Write,
)
from dspex.state.engines.memory import (
    HISTORY_BYTES,
    LOG_BYTES,
    MemoryEngine,
    _Space,
    record_bytes,
)
from dspex.state.engines.sqlite_seal import (
    Seal,
    Stored,
    check_pages,
    loss_error,
    lost_changes,
    lost_range_text,
    seal_text,
    unseal_text,
)
from dspex.state.engines.sqlite_tickets import Later, Statement, Ticket, finish, resolve_later

if TYPE_CHECKING:
    import asyncio

__all__ = ["FORMAT_VERSION", "SQLiteEngine"]

FORMAT_VERSION: Final = 2
"""Layout of the data file; a file with a higher number was written by a newer dspex.
2: records carry checksums and ``meta`` counts changes (format 1 files are upgraded on open)."""

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
_COUNTERS: Final = ("changes", "commits", "flushes")
"""Running counts in ``meta``: acknowledged changes, transactions, transactions flushed to disk
before they returned (``fsync``)."""
_COUNT_CHANGES: Final = (
    "UPDATE meta SET value = CAST(value AS INTEGER) + CASE key WHEN 'changes' THEN ?1 ELSE 1 "
    "END WHERE key IN ('changes', 'commits', ?2)"
)
"""Add ?1 changes and one transaction; ?2 is 'flushes' with ``fsync`` (else 'changes' again)."""
_LOST_PREFIX: Final = "lost:"


class SQLiteEngine(MemoryEngine):
    """Sessions kept in memory and written through to SQLite in ``directory``.

    Args:
        directory: the data directory (created if missing); holds ``dspex.sqlite3`` and
            ``dspex.lock``.
        history_size: versions kept per variable.
        log_size: updates kept per session for resuming watches.
        fsync: flush every commit to the disk (``synchronous=FULL``) so it also survives an
            OS crash or power loss; the default survives any death of the process.
        accept_loss: when the data file lost acknowledged changes, begin a new store
            generation instead of refusing to start (lost revisions are never reissued).

    Raises:
        StoreDataError: the directory cannot be created or written, is locked by another
            server, holds a data file from a newer dspex, a damaged one, or one that lost
            acknowledged changes (nothing is touched then).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        history_size: int = 100,
        log_size: int = 10_000,
        fsync: bool = False,
        accept_loss: bool = False,
        history_bytes: int = HISTORY_BYTES,
        log_bytes: int = LOG_BYTES,
        max_session_bytes: int | None = None,
        max_store_bytes: int | None = None,
    ) -> None:
        super().__init__(
            history_size=history_size,
            log_size=log_size,
            history_bytes=history_bytes,
            log_bytes=log_bytes,
            max_session_bytes=max_session_bytes,
            max_store_bytes=max_store_bytes,
        )
        self.directory = Path(directory).expanduser().absolute()
        self.fsync = fsync
        self.path = self.directory / DB_NAME
        self._db_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[Ticket] = []  # changes waiting for the next group commit
        self._leading = False  # a writer is committing; the ones queued meanwhile wait
        self._signals: queue.SimpleQueue[bool | None] | None = None  # see _committer()
        self._committer_thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self.generation = 1
        self.lost = 0  # acknowledged changes lost before this generation began (accept_loss)
        self._changes = 0
        self._counts = dict.fromkeys(_COUNTERS, 0)  # commits and flushes; see stats()
        self._flushed = "flushes" if fsync else "changes"  # the counter ?2 of _COUNT_CHANGES
        self._lock_fd = _lock_directory(self.directory)
        try:
            self._db, version = _open_database(self.path)
            try:
                self._seal = Seal(self.directory)
                try:
                    _prepare(self._db, self.path, fsync, version)
                    self._load()
                    self._check_loss(new_file=version is None, accept=accept_loss)
                    self._identities = _identities(self.path)
                except BaseException:
                    self._seal.close()
                    raise
            except BaseException:
                self._db.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- persistence hooks (called before memory changes; raising keeps memory as it was) --

    def _created(self, session_id: str, meta: SessionMeta) -> None:
        row = (session_id, meta.created_at, meta.last_heartbeat, meta.ttl, meta.owner, "[]")
        self._write(
            [
                ("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)", row),
                ("DELETE FROM meta WHERE key = ?", (_LOST_PREFIX + session_id,)),
            ]
        )

    def _touched(self, session_id: str, now: float) -> None:
        sql = "UPDATE sessions SET last_heartbeat = ?2 WHERE session_id = ?1"
        self._write([(sql, (session_id, now))])

    def _dropped(self, session_id: str) -> None:
        self._write(
            [
                (f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
                for table in ("history", "log", "sessions")
            ]
            + [("DELETE FROM meta WHERE key = ?", (_LOST_PREFIX + session_id,))]
        )

    def _edges_changed(self, session_id: str, edges: list[tuple[str, str]]) -> None:
        sql = "UPDATE sessions SET edges = ?2 WHERE session_id = ?1"
        self._write([(sql, (session_id, json.dumps([list(edge) for edge in edges])))])

    def _persist(self, session_id: str, updates: list[VariableUpdate]) -> None:
        if updates:
            statements = self._statements(session_id, self._spaces[session_id], updates)
            self._write(statements, len(updates))

    def _statements(
        self, session_id: str, space: _Space, updates: Sequence[VariableUpdate]
    ) -> list[Statement]:
        """The statements that write ``updates`` to the data file (nothing changes)."""
        statements: list[Statement] = []
        kept: dict[str, tuple[int | None, int]] = {}  # name -> (last kept version, count)
        for update in updates:
            name = update.name
            if name not in kept:
                history = space.history.get(name)
                kept[name] = (history[-1].version, len(history)) if history else (None, 0)
            kept[name] = self._history_statements(session_id, update, *kept[name], statements)
        oldest = self._oldest_logged(space, updates)
        if oldest is not None:
            statements.append((_TRIM_LOG, (session_id, oldest - 1)))
        return statements

    def _history_statements(
        self,
        session_id: str,
        update: VariableUpdate,
        last_version: int | None,
        count: int,
        out: list[Statement],
    ) -> tuple[int | None, int]:
        """Append the statements for one update (same rule as ``_install``); new (version, n)."""
        name, record = update.name, update.record
        raw = encode_record(record)
        logged = seal_text(Stored(session_id, name, update.revision, update.kind), raw)
        text = seal_text(Stored(session_id, name, 0, "kept"), raw)  # the text holds its revision
        out.append((_APPEND_LOG, (session_id, update.revision, update.kind, name, logged)))
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
        keep = self._versions_kept(self._spaces[session_id], name, record)
        if keep < count + 1:  # beyond history_size or history_bytes: drop the oldest rows
            out.append((_TRIM_HISTORY, (session_id, name, keep)))
        return record.version, keep

    def _write(self, statements: Sequence[Statement], changes: int = 1) -> None:
        """Apply ``statements`` atomically: all of them, or none.

        Group commit: writers queue their changes; the first one to find no commit running
        leads and commits every queued change in one transaction (one disk flush with
        ``fsync``), while the writers arriving meanwhile wait, each on its own ticket. When the
        transaction ended, the leader hands the lead to the first writer queued since, then
        wakes its own batch's writers: no writer waits for another to be scheduled before it
        learns its change was committed. The transaction also counts the changes in ``meta``;
        once it committed, the seal file records the new count (see ``_sqlite_seal``).

        Raises:
            StoreDataError: this change was not applied (disk full, unwritable file, closed).
        """
        ticket = Ticket(statements, changes)
        with self._queue_lock:
            self._queue.append(ticket)
            lead = not self._leading
            self._leading = True
        if not lead:
            ticket.wait()  # until its batch ended, or the lead was handed to it
            lead = not ticket.done
        if lead:
            self._lead(ticket)
        if ticket.error is not None:
            raise ticket.error

    def commit_later(
        self, session_id: str, writes: Sequence[Write], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[list[VariableUpdate]] | None:
        """:meth:`commit` without blocking ``loop``, the event loop calling it.

        The checks and the plan run now; the session stays locked while the committer
        thread (or a writer leading the group commit) commits the change with the others
        queued, installs it in memory and tells the listeners, exactly as :meth:`commit`
        does. The returned future of ``loop`` resolves then, every future of one batch in one
        loop callback, so a set waits for the disk without a thread of its own.

        Returns:
            The future of the updates; None when another write holds the session, or it has
            dependency edges (its dependents are recomputed after a change): call
            :meth:`commit` from a worker thread then.

        Raises:
            UnknownSession, EngineConflict, LimitExceededError: as :meth:`commit`, before
                anything is queued.
            StoreDataError: the store was closed.
        """
        space = self._spaces.get(session_id)
        if space is None:
            raise UnknownSession(session_id)
        if not space.lock.acquire(blocking=False):
            return None
        if space.edges:  # dependents are recomputed after the change: the blocking path
            space.lock.release()
            return None
        try:
            updates, sizes = self._checked_plan(session_id, space, writes)
            statements = self._statements(session_id, space, updates)
            ticket = Later(statements, session_id, space, updates, sizes, loop=loop)
            with self._queue_lock:
                if self._stopping:  # closing: the committer thread takes no more changes
                    raise self._closed_error()
                self._queue.append(ticket)
                lead = not self._leading
                self._leading = True
        except BaseException:
            space.lock.release()
            raise
        if lead:
            self._committer().put(True)
        return ticket.future

    def _committer(self) -> queue.SimpleQueue[bool | None]:
        """The committer thread's signals (True: lead a commit; None: stop), started once."""
        if self._signals is None:
            self._signals = queue.SimpleQueue()
            thread = threading.Thread(
                target=self._run_committer,
                args=(self._signals,),
                name=f"dspex-commit-{self.directory.name}",
                daemon=True,
            )
            thread.start()
            self._committer_thread = thread
        return self._signals

    def _run_committer(self, signals: queue.SimpleQueue[bool | None]) -> None:
        while signals.get() is not None:
            self._lead(None)

    def _lead(self, mine: Ticket | None) -> None:
        """Commit every queued change; repeat while the next leader would be this thread
        (the committer thread, or anyone once it stopped); else hand the lead on."""
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
            try:
                with self._db_lock:
                    self._commit_queued(batch)
            finally:
                interrupted = [ticket for ticket in batch if not ticket.done]
                if interrupted:  # a BaseException ended the commit
                    finish(interrupted, self._interrupted())
                again = self._hand_lead(mine)
                self._complete(batch, mine)
            if not again:
                return

    def _hand_lead(self, mine: Ticket | None) -> bool:
        """Give the lead to the first change queued meanwhile; True: this thread keeps it."""
        with self._queue_lock:
            following = self._queue[0] if self._queue else None
            self._leading = following is not None
            stopped = self._signals is None or self._stopping
        if following is None:
            return False
        if not isinstance(following, Later):
            following.wake()
            return False
        if mine is None or stopped:  # the committer thread leads on (or no one else can)
            return True
        self._committer().put(True)
        return False

    def _complete(self, batch: Sequence[Ticket], mine: Ticket | None) -> None:
        """Wake the batch's waiting writers; install and resolve the ``commit_later`` ones."""
        later: list[Later] = []
        for ticket in batch:
            if isinstance(ticket, Later):
                later.append(ticket)
            elif ticket is not mine:
                ticket.wake()
        if later:
            resolve_later(later, self._apply)

    def _closed_error(self) -> errors.StoreDataError:
        return errors.StoreDataError(
            f"the data directory {self.directory} was closed; reopen the store",
            directory=str(self.directory),
        )

    def _moved_error(self) -> errors.StoreDataError | None:
        """The refusal of a commit while the data file or its write-ahead log is not the one
        this engine opened (removed, moved away or replaced); None while both are in place."""
        found = _identities(self.path)
        if found == self._identities:
            return None
        changed = zip(_files(self.path), found, self._identities, strict=True)
        path, now = next((path, now) for path, now, then in changed if now != then)
        reason = "it is gone" if now is None else "another file took its place"
        return errors.StoreDataError(
            f"{path} was removed or replaced while the server ran: {reason}. The change was "
            "not applied (it would have been lost at the next start), and no write will be "
            "until the file is back: put the data directory back as it was, or restart the "
            "server on a restored directory",
            directory=str(self.directory),
        )

    def _interrupted(self) -> errors.StoreDataError:
        return errors.StoreDataError(
            f"the write to {self.path} was interrupted; the change was not applied",
            directory=str(self.directory),
        )

    def _commit_queued(self, batch: list[Ticket]) -> None:
        """Commit ``batch`` in one transaction (the caller holds ``_db_lock``)."""
        if self._closed:
            finish(batch, self._closed_error())
            return
        moved = self._moved_error()
        if moved is not None:
            finish(batch, moved)
            return
        try:
            applied = self._commit_batch(batch)
        except sqlite3.Error as exc:
            if len(batch) == 1:
                finish(batch, _data_error(self.path, exc, "the change was not applied"))
                return
            # Rare (a full disk, an I/O error): find which changes fail, one savepoint each.
            try:
                applied = self._commit_batch(batch, alone=True)
            except sqlite3.Error as again:
                finish(batch, _data_error(self.path, again, "the change was not applied"))
                return
        self._changes += sum(ticket.changes for ticket in applied)
        self._counts["commits"] += 1
        if self.fsync:
            self._counts["flushes"] += 1
        finish(applied, None)
        # Committed: a failure to update the seal must not report the writes as failed.
        with contextlib.suppress(OSError):
            self._seal.write(self.generation, self._changes)

    def _commit_batch(self, batch: Sequence[Ticket], *, alone: bool = False) -> list[Ticket]:
        """Commit ``batch`` in one transaction; returns the tickets applied.

        All or none by default (the hot path: no savepoint per change); with ``alone`` each
        change runs in its own savepoint, so a failing one is rolled back and failed alone.

        Raises:
            sqlite3.Error: the transaction failed and was rolled back (nothing applied).
        """
        applied: list[Ticket] = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for ticket in batch:
                if alone:
                    if self._apply_ticket(ticket):
                        applied.append(ticket)
                    continue
                for sql, params in ticket.statements:
                    self._db.execute(sql, params)
                applied.append(ticket)
            counted = sum(ticket.changes for ticket in applied)
            self._db.execute(_COUNT_CHANGES, (counted, self._flushed))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise
        return applied

    def _apply_ticket(self, ticket: Ticket) -> bool:
        """Run one change inside a savepoint; on failure roll it back alone and fail it."""
        self._db.execute("SAVEPOINT change")
        try:
            for sql, params in ticket.statements:
                self._db.execute(sql, params)
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK TO change")
            self._db.execute("RELEASE change")
            ticket.fail(_data_error(self.path, exc, "the change was not applied"))
            return False
        self._db.execute("RELEASE change")
        return True

    # -- loading ----------------------------------------------------------------------------

    def _load(self) -> None:
        """Rebuild the memory image from the data file."""
        try:
            check_pages(self._db, self.path)
            self._load_sessions()
            by_revision = self._load_history()
            self._load_log(by_revision)
            self._load_counts()
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            raise _data_error(self.path, exc, "the data file could not be read") from exc

    def _load_counts(self) -> None:
        """The generation, the change count and each session's lost revisions from ``meta``."""
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            if key == "generation":
                self.generation = int(value)
            elif key == "changes":
                self._changes = int(value)
            elif key in self._counts:
                self._counts[key] = int(value)
            elif key.startswith(_LOST_PREFIX) and key[len(_LOST_PREFIX) :] in self._spaces:
                first, last, generation = json.loads(value)
                space = self._spaces[key[len(_LOST_PREFIX) :]]
                space.lost = (int(first), int(last), int(generation))
                space.revision = max(space.revision, int(last))

    def _check_loss(self, *, new_file: bool, accept: bool) -> None:
        """Compare the change count with the seal; refuse a loss or begin a new generation.

        Raises:
            StoreDataError: acknowledged changes were lost and ``accept`` is false.
        """
        try:
            lost = lost_changes(self._seal, self._changes, self.path, new_file=new_file)
        except errors.StoreDataError:
            if not accept:
                raise
            lost = 1  # the seal is gone: how much was lost is unknown, at least skip ahead
        if lost and not accept:
            raise loss_error(self.path, self._seal, self._changes)
        if lost:
            self._new_generation(lost)
        self._seal.write_durably(self.generation, self._changes)

    def _new_generation(self, lost: int) -> None:
        """Skip ``lost`` revisions in every session and remember the gap for resuming."""
        self.generation += 1
        self.lost = lost
        self._changes += lost  # the count never goes back, so the seal agrees again
        statements: list[Statement] = [
            ("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(self.generation),)),
            ("UPDATE meta SET value = ? WHERE key = 'changes'", (str(self._changes),)),
        ]
        for session_id, space in self._spaces.items():
            first, space.revision = space.revision + 1, space.revision + lost
            space.lost = (first, space.revision, self.generation)
            text = lost_range_text(*space.lost)
            statements.append(
                ("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_LOST_PREFIX + session_id, text))
            )
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                self._db.execute(sql, params)
            self._db.execute("COMMIT")

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
        for session_id, name, stored in rows:
            space = self._spaces[session_id]
            text = unseal_text(Stored(session_id, name, 0, "kept"), stored, self.path)
            record = decode_record(text)
            if name not in space.history:
                space.history[name] = deque((record,), maxlen=self.history_size)
                self._history_total(space, name, record_bytes(record))
            else:
                self._keep_version(space, name, record)
            space.variables[name] = record
            by_revision[session_id, name, record.revision] = record
        return by_revision

    def _load_log(self, by_revision: dict[tuple[str, str, int], VariableRecord]) -> None:
        rows = self._db.execute(
            "SELECT session_id, revision, kind, name, record FROM log "
            "ORDER BY session_id, revision"
        )
        for session_id, revision, kind, name, stored in rows:
            text = unseal_text(Stored(session_id, name, revision, kind), stored, self.path)
            record = by_revision.get((session_id, name, revision))
            if record is None or kind == "delete":
                record = decode_record(text)
            self._keep_change(
                self._spaces[session_id], VariableUpdate(revision, kind, name, record)
            )

    def stats(self) -> dict[str, int]:
        """Running counts over the data file's life, kept in its ``meta`` table (so they
        survive restarts and ``kill -9``): ``changes`` acknowledged, ``commits`` (SQLite
        transactions: group commit puts the changes queued meanwhile in one) and ``flushes``
        (transactions flushed to disk before they returned, with ``fsync``). With concurrent
        writers, ``flushes / changes`` below 1 shows group commit at work."""
        return {"changes": self._changes, **{key: self._counts[key] for key in _COUNTERS[1:]}}

    @property
    def blocks(self) -> bool:
        """Reads come from the memory image; a commit blocks only when it flushes to disk."""
        return self.fsync

    def close(self) -> None:
        """Close the data file and release the directory lock. Idempotent."""
        with self._queue_lock:
            self._stopping = True
            signals, thread = self._signals, self._committer_thread
        if signals is not None and thread is not None:
            signals.put(None)
            thread.join(30)
        with self._db_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._seal.close()
            os.close(self._lock_fd)
        super().close()


def _data_error(path: Path, exc: BaseException, consequence: str) -> errors.StoreDataError:
    """A clear error for a failed SQLite operation on ``path``."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "disk is full" in str(exc):
        what = f"the disk holding {path.parent} is full ({exc}); free space or move --data"
    elif name in ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM") or "readonly" in str(exc):
        what = f"the data file {path} cannot be written ({exc}); check the directory's permissions"
    elif name == "SQLITE_CORRUPT" or "Could not decode" in str(exc) or "malformed" in str(exc):
        what = (
            f"the data file {path} is damaged ({str(exc)[:200]}); restore the directory from a "
            "backup"
        )
    elif name == "SQLITE_NOTADB":
        what = f"{path} is not a dspex data file ({exc}); move it away or choose another --data"
    else:
        what = f"the data file {path} failed: {exc}"
    return errors.StoreDataError(f"{what}; {consequence}", directory=str(path.parent))


def _files(path: Path) -> tuple[Path, Path]:
    """The data file and its write-ahead log."""
    return path, path.with_name(path.name + "-wal")


def _identities(path: Path) -> tuple[tuple[int, int] | None, ...]:
    """Which files the data file and its write-ahead log are now: device and inode numbers
    (None for one that does not exist)."""
    found: list[tuple[int, int] | None] = []
    for file in _files(path):
        try:
            status = os.stat(file)
        except FileNotFoundError:
            found.append(None)
        else:
            found.append((status.st_dev, status.st_ino))
    return tuple(found)


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


def _open_database(path: Path) -> tuple[sqlite3.Connection, int | None]:
    """Open the data file, refusing one written by a newer dspex before anything is written;
    returns it with its format version (None: a new file)."""
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
    return db, version


def _format_version(db: sqlite3.Connection) -> int | None:
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    return None if row is None else int(row[0])


def _prepare(db: sqlite3.Connection, path: Path, fsync: bool, version: int | None) -> None:
    """Switch to WAL, create the tables, stamp the format version and change count (new
    files), and upgrade a format 1 file (checksums on every record)."""
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
        db.execute("BEGIN IMMEDIATE")
        _run_script(db, _SCHEMA.split(";"))
        if version == 1:
            _upgrade_from_1(db)
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),)
        )
        for counter in _COUNTERS:
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, '0')", (counter,))
        db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '1')")
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


def _upgrade_from_1(db: sqlite3.Connection) -> None:
    """Add checksums to the records of a format 1 file (in the caller's transaction)."""
    rows = db.execute("SELECT session_id, name, pos, record FROM history").fetchall()
    for session_id, name, pos, text in rows:
        sealed = seal_text(Stored(session_id, name, 0, "kept"), text)
        db.execute(
            "UPDATE history SET record = ?4 WHERE session_id = ?1 AND name = ?2 AND pos = ?3",
            (session_id, name, pos, sealed),
        )
    rows = db.execute("SELECT session_id, revision, kind, name, record FROM log").fetchall()
    for session_id, revision, kind, name, text in rows:
        sealed = seal_text(Stored(session_id, name, revision, kind), text)
        db.execute(
            "UPDATE log SET record = ?3 WHERE session_id = ?1 AND revision = ?2",
            (session_id, revision, sealed),
        )
