"""``SQLiteEngine.commit_later``: a change queued from an event loop is committed by the
engine's committer thread (with the changes of blocking writers), installed, and acknowledged
on the loop; refusals happen before anything is queued and leave the session usable; a loop
that never runs again does not stall the other writers.

Real engines on real data directories and a real asyncio loop; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from support.engines import Collector, change, register

from dspex import errors
from dspex._model import make_spec
from dspex.state.engines import EngineConflict, Write
from dspex.state.engines.sqlite import SQLiteEngine

pytestmark = pytest.mark.timeout(60)

TEXT = make_spec(str)


def _engine(path: Path, sessions: int = 1, **options: object) -> SQLiteEngine:
    engine = SQLiteEngine(path, fsync=True, **options)  # type: ignore[arg-type]
    for index in range(sessions):
        engine.create_session(f"s{index}", ttl=None, owner="t")
        engine.commit(f"s{index}", [register("a", 0.0)])
    return engine


def test_a_later_commit_is_durable_installed_and_told_once_acknowledged(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    seen = Collector()
    engine.listen(seen)

    async def main() -> list[object]:
        old = engine.get("s0", "a")
        assert old is not None
        future = engine.commit_later("s0", [change(old, 1.5)], asyncio.get_running_loop())
        assert future is not None
        return list(await future)

    (update,) = asyncio.run(main())
    assert engine.get("s0", "a") == update.record  # type: ignore[attr-defined]
    assert [u for _, ups, _ in seen.calls for u in ups] == [update]
    engine.close()
    reopened = SQLiteEngine(tmp_path)
    try:
        assert reopened.get("s0", "a").value == 1.5  # type: ignore[union-attr]
        assert reopened.stats()["flushes"] == reopened.stats()["commits"] == 3
    finally:
        reopened.close()


def test_a_busy_session_or_one_with_dependents_takes_the_blocking_path(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            old = engine.get("s0", "a")
            assert old is not None
            with engine.spaces["s0"].lock:  # another write holds the session
                assert engine.commit_later("s0", [change(old, 1.0)], loop) is None
            engine.commit("s0", [register("b", 0.0)])
            engine.put_edges("s0", [], [("a", "b")])
            assert engine.commit_later("s0", [change(old, 1.0)], loop) is None

        asyncio.run(main())
        assert engine.get("s0", "a").value == 0.0  # type: ignore[union-attr]
        assert not engine.spaces["s0"].lock.locked()
    finally:
        engine.close()


def test_refused_later_commits_change_nothing_and_leave_the_session_usable(
    tmp_path: Path,
) -> None:
    engine = _engine(tmp_path, max_session_bytes=1_000)
    try:
        engine.commit("s0", [register("t", "", TEXT)])

        async def main() -> float:
            loop = asyncio.get_running_loop()
            old = engine.get("s0", "a")
            text = engine.get("s0", "t")
            assert old is not None and text is not None
            with pytest.raises(errors.LimitExceededError):
                engine.commit_later("s0", [change(text, "x" * 5_000)], loop)
            with pytest.raises(EngineConflict):
                stale = change(old, 2.0)._replace(expect_revision=old.revision - 1)
                engine.commit_later("s0", [stale], loop)
            future = engine.commit_later("s0", [change(old, 3.0)], loop)
            assert future is not None
            return float((await future)[0].record.value)

        assert asyncio.run(main()) == 3.0
        assert engine.get("s0", "t").value == ""  # type: ignore[union-attr]
        assert engine.stats()["changes"] == 4  # the session, "a", "t", and the one set
    finally:
        engine.close()


def test_later_and_blocking_writers_share_group_commits(tmp_path: Path) -> None:
    """40 later commits from the loop and 40 blocking ones from 4 threads, all at once."""
    engine = _engine(tmp_path, sessions=8)
    try:

        def blocking(session_id: str) -> None:
            for value in range(10):
                record = engine.get(session_id, "a")
                assert record is not None
                engine.commit(session_id, [change(record, float(value))])

        async def later(session_id: str) -> None:
            loop = asyncio.get_running_loop()
            for value in range(10):
                record = engine.get(session_id, "a")
                assert record is not None
                future = engine.commit_later(session_id, [change(record, float(value))], loop)
                assert future is not None  # only this coroutine writes this session
                await future

        _all_at_once(blocking, [f"s{i}" for i in range(4)], later, [f"s{i}" for i in range(4, 8)])
        stats = engine.stats()
        assert stats["changes"] == 16 + 80, stats
        assert stats["flushes"] == stats["commits"] < 16 + 80, stats
        assert all(engine.get(f"s{i}", "a").value == 9.0 for i in range(8))  # type: ignore[union-attr]
    finally:
        engine.close()


def test_batched_changes_leave_the_data_file_like_memory(tmp_path: Path) -> None:
    """Group commits mixing registrations, sets beyond the history and log bounds,
    annotations, deletes and atomic two-name commits, from the loop and from threads, reload
    as the memory image they were committed from."""
    engine = _engine(tmp_path, sessions=6, history_size=3, log_size=5)

    def steps(session_id: str, index: int) -> list[list[Write]]:
        """Writes for one session, each computed from the current records when it runs."""
        a = engine.get(session_id, "a")
        assert a is not None
        if index % 4 == 0:
            return [[register(f"r{index}", index / 2)]]
        if index % 4 == 1:
            return [[change(a, index / 2), register(f"r{index}", 1.0)]]
        if index % 4 == 2:
            return [[change(a, a.value, "stale", stale=True, version=a.version)]]
        return [[change(a, index / 2)]]

    async def later(session_id: str) -> None:
        loop = asyncio.get_running_loop()
        for index in range(16):
            for writes in steps(session_id, index):
                future = engine.commit_later(session_id, writes, loop)
                assert future is not None
                await future

    def blocking(session_id: str) -> None:
        for index in range(16):
            for writes in steps(session_id, index):
                engine.commit(session_id, writes)
        deleted = engine.get(session_id, "r0")
        assert deleted is not None
        engine.commit(session_id, [change(deleted, 0.0, "delete", version=deleted.version)])

    _all_at_once(blocking, ["s0", "s1"], later, [f"s{i}" for i in range(2, 6)])
    sessions = [f"s{i}" for i in range(6)]
    image = {s: _image(engine, s) for s in sessions}
    stats = engine.stats()
    engine.close()
    reopened = SQLiteEngine(tmp_path)
    try:
        loaded = {s: _image(reopened, s) for s in sessions}
    finally:
        reopened.close()
    assert loaded == image
    assert stats["commits"] < stats["changes"], stats  # some batches held several changes


def _all_at_once(
    blocking: Callable[[str], None],
    threaded: list[str],
    later: Callable[[str], Awaitable[None]],
    looped: list[str],
) -> None:
    """Run ``blocking`` for each of the ``threaded`` sessions on a thread of its own while one
    event loop runs ``later`` for each of the ``looped`` ones; return once all are done."""

    async def main() -> None:
        threads = [threading.Thread(target=blocking, args=(sid,)) for sid in threaded]
        for thread in threads:
            thread.start()
        await asyncio.gather(*(later(sid) for sid in looped))
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)

    asyncio.run(main())


def _image(engine: SQLiteEngine, session_id: str) -> tuple[object, ...]:
    """The session's records, kept versions and logged changes (as far back as kept; batch
    marks and the order of names are not stored)."""
    records = sorted(engine.records(session_id), key=lambda r: r.name)
    histories = {r.name: engine.history(session_id, r.name) for r in records}
    after = engine.spaces[session_id].log[0].revision - 1
    log = [(u.revision, u.kind, u.record) for u in engine.changes(session_id, after)]
    return records, histories, log


def test_a_loop_that_never_runs_again_does_not_stall_the_other_writers(tmp_path: Path) -> None:
    """The commit of a change queued from an event loop must not depend on that loop running
    again (only its acknowledgement does): blocking writers queued behind it still finish, and
    the change is durable and installed."""
    engine = _engine(tmp_path, sessions=2)
    loop = asyncio.new_event_loop()  # never run
    try:
        old = engine.get("s0", "a")
        assert old is not None
        future = engine.commit_later("s0", [change(old, 4.0)], loop)
        assert future is not None
        done = threading.Event()

        def blocking() -> None:
            record = engine.get("s1", "a")
            assert record is not None
            engine.commit("s1", [change(record, 5.0)])
            done.set()

        thread = threading.Thread(target=blocking, daemon=True)
        thread.start()
        assert done.wait(10), "the blocking writer waited for a loop that never runs"
        assert engine.get("s0", "a").value == 4.0  # type: ignore[union-attr]
        assert engine.get("s1", "a").value == 5.0  # type: ignore[union-attr]
    finally:
        engine.close()
        loop.close()
    reopened = SQLiteEngine(tmp_path)
    try:
        assert [reopened.get(s, "a").value for s in ("s0", "s1")] == [4.0, 5.0]  # type: ignore[union-attr]
    finally:
        reopened.close()
