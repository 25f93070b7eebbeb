"""SQLiteEngine on real files: durability across kill -9, and every bad data directory.

Each bad-input test checks the error is a clear ``StoreDataError`` and that nothing changed.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support.engines import Collector

from dspex import errors
from dspex._model import EMPTY, make_spec
from dspex.state.engines import Write, open_engine
from dspex.state.engines.sqlite import DB_NAME, FORMAT_VERSION, SQLiteEngine

WRITER = Path(__file__).with_name("sqlite_writer.py")
FLOAT = make_spec(float)
TEXT = make_spec(str)


def register(name: str, value: object, spec: object = FLOAT) -> Write:
    return Write(name, None, "register", spec, value, 1, "t", EMPTY)  # type: ignore[arg-type]


def set_value(engine: SQLiteEngine, sid: str, name: str, value: object) -> None:
    record = engine.get(sid, name)
    assert record is not None
    write = Write(name, record.revision, "set", record.spec, value, record.version + 1, "t", EMPTY)
    engine.commit(sid, [write])


def file_digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.name.startswith(DB_NAME)
    }


def test_disk_rows_are_trimmed_like_memory(tmp_path: Path) -> None:
    engine = SQLiteEngine(tmp_path, history_size=3, log_size=5)
    engine.create_session("s", ttl=None, owner="")
    engine.commit("s", [register("a", 0.0), register("b", 0.0)])
    for value in range(1, 21):
        set_value(engine, "s", "a", float(value))
    reader = sqlite3.connect(f"file:{tmp_path / DB_NAME}?mode=ro", uri=True)
    try:
        history = reader.execute("SELECT name, COUNT(*) FROM history GROUP BY name").fetchall()
        log = reader.execute("SELECT MIN(revision), MAX(revision) FROM log").fetchone()
    finally:
        reader.close()
    assert sorted(history) == [("a", 3), ("b", 1)]
    assert log == (18, 22)
    engine.close()


@pytest.mark.slow
def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    """20 cycles: a writer process commits, is SIGKILLed mid-load, and nothing acked is lost."""
    rng = random.Random(6)
    acked: dict[int, int] = {}  # revision -> value, over all cycles
    for cycle in range(20):
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        try:
            assert writer.stdout.readline() == "ready\n"
            for _ in range(rng.randint(1, 400)):
                revision, value = writer.stdout.readline().split()
                acked[int(revision)] = int(value)
            writer.send_signal(signal.SIGKILL)
            rest = writer.stdout.read()
        finally:
            writer.kill()
            writer.wait(timeout=30)
        assert writer.returncode == -signal.SIGKILL, f"cycle {cycle}: writer ended on its own"
        for line in rest.splitlines(keepends=True):
            if line.endswith("\n"):
                revision, value = line.split()
                acked[int(revision)] = int(value)

        engine = SQLiteEngine(tmp_path, history_size=5, log_size=1_000_000)
        try:
            logged = {u.revision: (u.name, u.record.value) for u in engine.changes("s", 0)}
            lost = [rev for rev, value in acked.items() if logged.get(rev) != ("y", value)]
            assert not lost, f"cycle {cycle}: acknowledged revisions lost: {lost[:10]}"
            x, y = engine.get("s", "x"), engine.get("s", "y")
            assert x is not None and y is not None
            assert x.value == y.value >= max(acked.values()), "a commit was torn or lost"
            assert sorted(logged) == list(range(1, len(logged) + 1))  # no hole in revisions
            assert engine.session("s").revision == len(logged)  # type: ignore[union-attr]
            assert [r.value for r in engine.history("s", "x")] == list(
                range(max(0, x.value - 4), x.value + 1)
            )
        finally:
            engine.close()


def test_reopen_after_kill_keeps_the_directory_usable(tmp_path: Path) -> None:
    """A killed holder leaves no stale lock: the kernel drops its flock."""
    holder = _hold(tmp_path)
    try:
        with pytest.raises(errors.StoreDataError) as refused:
            SQLiteEngine(tmp_path)
        message = str(refused.value)
        assert str(tmp_path) in message and f"pid {holder.pid}" in message
        assert "another dspex server" in message
    finally:
        holder.kill()
        holder.wait(timeout=30)
    SQLiteEngine(tmp_path).close()


def test_a_second_engine_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    engine = SQLiteEngine(tmp_path)
    engine.create_session("s", ttl=None, owner="")
    with pytest.raises(errors.StoreDataError, match=f"pid {os.getpid()}") as refused:
        SQLiteEngine(tmp_path)
    assert refused.value.code == "store_data"
    assert engine.session("s") is not None  # the first engine is unaffected
    engine.commit("s", [register("a", 1.0)])
    engine.close()
    reopened = SQLiteEngine(tmp_path)
    assert reopened.get("s", "a") is not None
    reopened.close()


def test_a_newer_data_file_is_refused_untouched(tmp_path: Path) -> None:
    engine = SQLiteEngine(tmp_path)
    engine.create_session("s", ttl=None, owner="")
    engine.commit("s", [register("a", 1.0)])
    engine.close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (FORMAT_VERSION + 1,))
    db.close()
    before = file_digests(tmp_path)

    with pytest.raises(errors.StoreDataError) as refused:
        SQLiteEngine(tmp_path)
    message = str(refused.value)
    assert "newer dspex" in message and str(tmp_path / DB_NAME) in message
    assert f"format version {FORMAT_VERSION + 1}" in message
    assert file_digests(tmp_path) == before

    with sqlite3.connect(tmp_path / DB_NAME) as db:  # an older dspex's file opens again
        db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (FORMAT_VERSION,))
    db.close()
    reopened = SQLiteEngine(tmp_path)  # the refusal left no lock behind
    assert reopened.get("s", "a") is not None
    reopened.close()


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"not sqlite at all, " * 100)
    before = file_digests(tmp_path)
    with pytest.raises(errors.StoreDataError, match="not a dspex data file"):
        SQLiteEngine(tmp_path)
    assert file_digests(tmp_path) == before


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(errors.StoreDataError, match=r"cannot use .*a-file/data"):
        SQLiteEngine(blocker / "data")
    with pytest.raises(errors.StoreDataError, match=r"cannot use .*a-file"):
        SQLiteEngine(blocker)
    occupied = tmp_path / "occupied"
    (occupied / DB_NAME).mkdir(parents=True)  # the data file's name is taken by a directory
    with pytest.raises(errors.StoreDataError, match=r"cannot be written|failed"):
        SQLiteEngine(occupied)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories anyway")
def test_a_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(errors.StoreDataError, match=str(tmp_path)):
            SQLiteEngine(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_a_full_disk_refuses_the_write_and_changes_nothing(tmp_path: Path) -> None:
    engine = SQLiteEngine(tmp_path)
    engine.create_session("s", ttl=None, owner="")
    engine.commit("s", [register("a", "small", TEXT)])
    seen = Collector()
    engine.listen(seen)
    pages = engine._db.execute("PRAGMA page_count").fetchone()[0]
    engine._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL
    before = (engine.records("s"), engine.history("s", "a"), engine.changes("s", 0))

    with pytest.raises(errors.StoreDataError, match="full") as refused:
        set_value(engine, "s", "a", "x" * 200_000)
    assert "not applied" in str(refused.value)
    with pytest.raises(errors.StoreDataError, match="full"):
        engine.create_session("new", ttl=None, owner="o" * 200_000)
    assert (engine.records("s"), engine.history("s", "a"), engine.changes("s", 0)) == before
    assert engine.session("new") is None and engine.session("s").revision == 1  # type: ignore[union-attr]
    assert seen.calls == []

    engine._db.execute("PRAGMA max_page_count = 1073741823")  # space freed
    set_value(engine, "s", "a", "x" * 200_000)
    assert [u.revision for _, ups, _ in seen.calls for u in ups] == [2]
    engine.close()
    reopened = SQLiteEngine(tmp_path)
    assert reopened.get("s", "a").value == "x" * 200_000  # type: ignore[union-attr]
    assert reopened.session("new") is None
    reopened.close()


def test_open_engine_maps_specs_without_eager_imports(tmp_path: Path) -> None:
    for spec in (f"sqlite://{tmp_path / 'a'}", str(tmp_path / "b")):
        engine = open_engine(spec, history_size=7)
        assert isinstance(engine, SQLiteEngine) and engine.history_size == 7
        engine.close()
    assert (tmp_path / "a" / DB_NAME).exists() and (tmp_path / "b" / DB_NAME).exists()
    assert type(open_engine("memory")).__name__ == "MemoryEngine"
    code = (
        "import sys, dspex, dspex.state.engines as e; "
        "assert 'sqlite3' not in sys.modules and 'redis' not in sys.modules, 'eager'; "
        "e.SQLiteEngine; assert 'sqlite3' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _hold(directory: Path) -> subprocess.Popen[str]:
    """A child process that opens an engine on ``directory`` and waits to be killed."""
    code = (
        "import sys, time; from dspex.state.engines.sqlite import SQLiteEngine; "
        f"SQLiteEngine({str(directory)!r}); print('ready', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    if holder.stdout.readline() != "ready\n":
        holder.kill()
        holder.wait(timeout=30)
        pytest.fail("the holder process could not open the engine")
    return holder
