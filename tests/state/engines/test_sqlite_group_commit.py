"""Group commit with ``--fsync``: concurrent writers through a real ``dspex serve`` share disk
flushes, and every acknowledged write survives ``kill -9``.

The flush count is the engine's own (``SQLiteEngine.stats``, kept in the data file's ``meta``
table), read after the server was killed: no timing is asserted.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.serve_process import ServeProcess

from dspex._model import make_spec
from dspex.state.engines.sqlite import SQLiteEngine
from dspex.state.store import SessionStoreProvider

pytestmark = pytest.mark.timeout(120)

WRITERS = 8
ROUNDS = 25


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
    # Sessions, registrations and sets: every change counted. Each change committed and
    # flushed alone would make flushes == changes; group commit makes fewer.
    assert stats["changes"] >= WRITERS * (ROUNDS + 2), stats
    assert 0 < stats["flushes"] == stats["commits"] < stats["changes"], stats


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
    assert second == {"changes": 3, "commits": 3, "flushes": 1}
