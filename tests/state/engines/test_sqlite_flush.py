"""Group commit with ``--fsync``: one WAL flush covers every commit made before it, concurrent
writers through a real ``dspex serve`` share flushes, and every acknowledged write survives
``kill -9``.

The flush count is the engine's own (``SQLiteEngine.stats``, kept in the data file's ``meta``
table), read after the server was killed: no timing is asserted.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.serve_process import ServeProcess

from dspex import errors
from dspex._model import make_spec
from dspex.state.engines.sqlite import SQLiteEngine
from dspex.state.engines.sqlite_flush import WalFlush
from dspex.state.store import SessionStoreProvider

pytestmark = pytest.mark.timeout(120)

WRITERS = 8
ROUNDS = 25


def test_one_flush_covers_every_commit_made_while_another_flush_ran(tmp_path: Path) -> None:
    wal = tmp_path / "dspex.sqlite3-wal"
    wal.write_bytes(b"frames")
    sealed: list[int] = []
    flushing, disk_done = threading.Event(), threading.Event()

    def seal(changes: int) -> None:  # the first flush is held here, as by a slow disk
        sealed.append(changes)
        if len(sealed) == 1:
            flushing.set()
            disk_done.wait(30)

    flush = WalFlush(wal, 5, seal, lambda: None)
    first = threading.Thread(target=flush.flush, args=(flush.committed(1),))
    first.start()
    assert flushing.wait(30)
    marks = [flush.committed(changes) for changes in range(2, 2 + WRITERS)]  # meanwhile
    waiters = [threading.Thread(target=flush.flush, args=(mark,)) for mark in marks]
    for waiter in waiters:
        waiter.start()
    disk_done.set()
    for thread in (first, *waiters):
        thread.join(30)
    assert (flush.flushes, flush.flushed, sealed) == (5 + 2, marks[-1], [1, WRITERS + 1])
    flush.flush(marks[0])  # already on the disk: returns without flushing
    assert flush.flushes == 7
    flush.close()
    with pytest.raises(errors.StoreDataError, match="was closed"):
        flush.flush(flush.committed(WRITERS + 2))


def _writer(
    address: str, start: threading.Barrier, acked: list[tuple[str, int, int]], failures: list[str]
) -> None:
    """Create a session with ``n`` and set it once per round, all writers in lockstep; record
    (session, revision, value) for every set that returned."""
    client = SessionStoreProvider(address, timeout=30.0)
    try:
        session_id = client.create_session()
        client.register_variable(session_id, "n", make_spec(int), 0)
        for value in range(1, ROUNDS + 1):
            start.wait(30)
            record = client.set_variable(session_id, "n", value)
            acked.append((session_id, record.revision, value))
    except Exception as exc:  # reported by the test: a writer must not fail silently
        failures.append(repr(exc))
        start.abort()
    finally:
        client.close()


def test_concurrent_fsync_writers_share_flushes_and_survive_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServeProcess("--data", str(data), "--fsync").start()
    acked: list[tuple[str, int, int]] = []
    failures: list[str] = []
    try:
        start = threading.Barrier(WRITERS)
        threads = [
            threading.Thread(target=_writer, args=(server.address, start, acked, failures))
            for _ in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        # One more change: its commit stores the count of every flush before it.
        last = SessionStoreProvider(server.address, timeout=30.0)
        try:
            last.create_session("last")
        finally:
            last.close()
    finally:
        server.kill()  # SIGKILL: nothing is flushed or checkpointed on the way out
    assert not failures, failures
    assert len(acked) == WRITERS * ROUNDS

    engine = SQLiteEngine(data)
    try:
        stored = {
            (session_id, update.revision, update.record.value)
            for session_id in {session_id for session_id, _, _ in acked}
            for update in engine.changes(session_id, 0)
        }
        stats = engine.stats()
    finally:
        engine.close()
    missing = [write for write in acked if write not in stored]
    assert not missing, f"{len(missing)} acknowledged writes lost after kill -9: {missing[:5]}"
    # Sessions, registrations and sets: every change counted. Each change flushed alone
    # would make flushes == changes (the last change's commit stored the count before its
    # own flush, and the flush at open is counted too); group commit makes fewer.
    assert stats["changes"] >= WRITERS * (ROUNDS + 2) + 1, stats
    assert 0 < stats["flushes"] < stats["changes"], stats
    assert stats["commits"] <= stats["changes"], stats


def test_without_fsync_nothing_is_flushed_and_counts_survive_a_reopen(tmp_path: Path) -> None:
    engine = SQLiteEngine(tmp_path)
    try:
        engine.create_session("s", ttl=None, owner="t")
        engine.touch("s", engine.now())
        first = engine.stats()
    finally:
        engine.close()
    assert first == {"changes": 2, "commits": 2, "flushes": 0}
    reopened = SQLiteEngine(tmp_path, fsync=True)
    try:
        reopened.touch("s", reopened.now())
        second = reopened.stats()
    finally:
        reopened.close()
    # The flush at open covers what the file held; the touch is flushed before it returns.
    assert second["changes"] == 3 and second["commits"] == 3, second
    assert second["flushes"] == 2, second
