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

import dspex.errors as errors
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


KILL_AFTER = 400
"""Acknowledged sets after which the server is killed while the writers keep setting."""


class _Ledger:
    """What the writers saw: sets acknowledged (session, revision, value) and refused values."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: list[tuple[str, int, object]] = []
        self.refused: list[tuple[str, object]] = []
        self.enough = threading.Event()

    def ack(self, session_id: str, revision: int, value: object) -> None:
        with self.lock:
            self.acked.append((session_id, revision, value))
            if len(self.acked) >= KILL_AFTER:
                self.enough.set()


def _setting_until_killed(address: str, session_id: str, writer: int, ledger: _Ledger) -> None:
    """Set ``n`` in a loop; every 5th step also a value over the session's byte budget and a
    set with a stale version, both refused. Ends when the server is gone."""
    client = SessionStoreProvider(address, timeout=10.0)
    try:
        for step in range(1, 100_000):
            value = writer * 1_000_000 + step
            record = client.set_variable(session_id, "n", value)
            ledger.ack(session_id, record.revision, value)
            if step % 5:
                continue
            for refused, name, kwargs in (
                (f"{value}:" + "x" * 8_000, "s", {}),  # over --max-session-bytes
                (-value, "n", {"expected_version": 1}),  # stale version
            ):
                try:
                    client.set_variable(session_id, name, refused, **kwargs)
                except (errors.LimitExceededError, errors.VersionConflictError):
                    with ledger.lock:
                        ledger.refused.append((session_id, refused))
    except errors.StoreUnavailableError:
        pass  # killed: the set in flight has no outcome to check
    finally:
        client.close()


def test_kill_9_during_concurrent_fsync_sets_keeps_acknowledged_and_never_refused(
    tmp_path: Path,
) -> None:
    """8 writers set through a real ``--fsync`` server (two of them share a session, so a set
    also finds its session busy) until it is SIGKILLed mid-load: after a restart every
    acknowledged set is there, and no refused one (over the byte budget, stale version)."""
    data = tmp_path / "data"
    server = ServeProcess("--data", str(data), "--fsync", "--max-session-bytes", "4096").start()
    ledger = _Ledger()
    setup = SessionStoreProvider(server.address, timeout=30.0)
    sessions = [setup.create_session() for _ in range(WRITERS - 1)]
    for session_id in sessions:
        setup.register_variable(session_id, "n", make_spec(int), 0)
        setup.register_variable(session_id, "s", make_spec(str), "")
    setup.close()
    threads = [
        threading.Thread(
            target=_setting_until_killed,
            args=(server.address, sessions[writer % len(sessions)], writer, ledger),
        )
        for writer in range(WRITERS)
    ]
    try:
        for thread in threads:
            thread.start()
        assert ledger.enough.wait(60), f"only {len(ledger.acked)} sets acknowledged in 60 s"
    finally:
        server.kill()  # SIGKILL while the writers are still setting
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    kinds = {type(value) for _, value in ledger.refused}
    assert kinds == {int, str}, f"both kinds of refusal must have happened: {ledger.refused[:4]}"

    engine = SQLiteEngine(data)
    try:
        stored = {
            session_id: {(u.revision, u.record.value) for u in engine.changes(session_id, 0)}
            for session_id in sessions
        }
    finally:
        engine.close()
    lost = [(s, r, v) for s, r, v in ledger.acked if (r, v) not in stored[s]]
    assert not lost, f"{len(lost)} of {len(ledger.acked)} acknowledged sets lost: {lost[:5]}"
    applied = [(s, v) for s, v in ledger.refused if v in {value for _, value in stored[s]}]
    assert not applied, f"refused sets were applied: {applied[:3]}"


def test_watchers_of_a_fsync_server_see_every_concurrent_set_in_order(tmp_path: Path) -> None:
    """Sets committed by the committer thread reach watch streams like any other change."""
    server = ServeProcess("--data", str(tmp_path / "data"), "--fsync").start()
    setup = SessionStoreProvider(server.address, timeout=30.0)
    try:
        sessions = [setup.create_session() for _ in range(4)]
        for session_id in sessions:
            setup.register_variable(session_id, "n", make_spec(int), 0)
        watches = [setup.watch_variables(session_id, ["n"]) for session_id in sessions]
        failures: list[str] = []
        start = threading.Barrier(len(sessions))

        def write(session_id: str) -> None:
            client = SessionStoreProvider(server.address, timeout=30.0)
            try:
                start.wait(30)
                for value in range(1, ROUNDS + 1):
                    client.set_variable(session_id, "n", value)
            except Exception as exc:  # reported by the test
                failures.append(repr(exc))
            finally:
                client.close()

        threads = [threading.Thread(target=write, args=(s,)) for s in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures, failures
        for watch in watches:
            seen = []
            while len(seen) < ROUNDS and (update := watch.poll(10.0)) is not None:
                seen.append(update)
            watch.cancel()
            assert [u.record.value for u in seen] == list(range(1, ROUNDS + 1))
            revisions = [u.revision for u in seen]
            assert revisions == sorted(revisions), revisions
    finally:
        setup.close()
        server.stop()
