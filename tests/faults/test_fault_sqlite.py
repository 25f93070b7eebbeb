"""Damaged SQLite data directories (issue 12, item 5): a flipped byte, a truncated or deleted
WAL, a flipped byte in the main file. The server refuses to start, naming the file and the
problem, instead of serving wrong values or reissuing acknowledged revisions; with
``--accept-data-loss`` it starts a new generation whose revisions never reuse the lost ones, and
resuming a watch from a lost revision is refused.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.faults import TEXT, WAIT, flip_byte, killed_with_writes, record_figures
from support.serve_process import ServeProcess, run_dspex

from dspex import errors
from dspex.state.store import SessionStoreProvider

WRITES = 60


def _wal(directory: Path) -> Path:
    return directory / "dspex.sqlite3-wal"


def _delete(path: Path) -> None:
    path.unlink()


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _flip_middle(path: Path) -> None:
    flip_byte(path, path.stat().st_size // 2)


def _refusal(directory: Path, *flags: str) -> str:
    result = run_dspex("serve", "--address", "127.0.0.1:0", "--data", str(directory), *flags)
    assert result.returncode == 1 and result.stdout == "", result
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    return line


@pytest.mark.parametrize("damage", [_delete, _truncate, _flip_middle])
def test_damaged_wal_is_refused_then_accepted_as_a_new_generation(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    acked = killed_with_writes(tmp_path, WRITES)
    assert _wal(tmp_path).stat().st_size > 0
    damage(_wal(tmp_path))
    line = _refusal(tmp_path)
    assert f"the data file {tmp_path / 'dspex.sqlite3'} lost acknowledged writes" in line
    assert "--accept-data-loss" in line
    last_acked = acked[-1].revision

    with ServeProcess("--data", str(tmp_path), "--accept-data-loss") as server:
        assert any("store generation 2" in text for text in _stderr_soon(server))
        client = SessionStoreProvider(server.address, timeout=10.0)
        try:
            kept = client.get_variable("kept", "v").revision if _exists(client) else 0
            if kept:
                assert client.get_session("kept").revision >= last_acked
                new = client.set_variable("kept", "v", "after-loss")
                assert new.revision > last_acked  # never a revision issued twice
                lost_revision = kept + 1  # the first revision the data file lost
                assert lost_revision <= last_acked
                with pytest.raises(errors.WatchLaggedError, match="were lost"):
                    client.watch_variables("kept", after_revision=lost_revision)
        finally:
            client.close()
    record_figures(
        f"sqlite_wal_{damage.__name__.strip('_')}",
        acknowledged=len(acked),
        lost_by_the_damage=last_acked - kept,
        refused_at_start=True,
        revisions_reissued=0,
    )


def test_flipped_byte_in_the_main_file_is_refused(tmp_path: Path) -> None:
    with ServeProcess("--data", str(tmp_path)) as server:
        client = SessionStoreProvider(server.address, timeout=10.0)
        client.create_session("kept")
        client.register_variable("kept", "v", TEXT, "MARKER-good-value")
        client.close()
        assert server.stop() == 0  # graceful: checkpointed into the main file
    data = tmp_path / "dspex.sqlite3"
    offset = data.read_bytes().rindex(b"MARKER-good-value")
    flip_byte(data, offset + len("MARKER-"))
    line = _refusal(tmp_path)
    assert f"the data file {data} is damaged" in line, line
    assert "fails its checksum" in line


def test_deleted_main_file_is_refused(tmp_path: Path) -> None:
    killed_with_writes(tmp_path, 5)
    for name in ("dspex.sqlite3", "dspex.sqlite3-wal", "dspex.sqlite3-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    line = _refusal(tmp_path)
    assert "lost acknowledged writes" in line and "holds 0 changes" in line


def test_clean_restart_after_kill_loses_nothing(tmp_path: Path) -> None:
    acked = killed_with_writes(tmp_path, WRITES)
    with ServeProcess("--data", str(tmp_path)) as server:
        client = SessionStoreProvider(server.address, timeout=10.0)
        try:
            assert client.get_variable("kept", "v").revision == acked[-1].revision
            assert client.set_variable("kept", "v", "next").revision == acked[-1].revision + 1
        finally:
            client.close()


def _exists(client: SessionStoreProvider) -> bool:
    try:
        client.get_session("kept")
    except errors.SessionNotFoundError:
        return False
    return True


def _stderr_soon(server: ServeProcess) -> list[str]:
    """The server's stderr lines, once it printed its start-up warning (or after WAIT)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not any(
        "warning" in line for line in server.stderr_lines
    ):
        time.sleep(0.05)
    return list(server.stderr_lines)


def test_a_data_dir_of_format_1_is_upgraded_not_refused(tmp_path: Path) -> None:
    """A directory written before checksums and the seal existed (format 1, rebuilt here from
    a current one) opens: its records get checksums, and a seal is started."""
    acked = killed_with_writes(tmp_path, 5)
    with ServeProcess("--data", str(tmp_path)) as server:
        assert server.stop() == 0  # a clean close: everything in the main file
    db = sqlite3.connect(tmp_path / "dspex.sqlite3")
    for table in ("history", "log"):
        db.execute(f"UPDATE {table} SET record = substr(record, 10)")  # drop "crc32hex:"
    db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    db.execute("DELETE FROM meta WHERE key IN ('changes', 'generation')")
    db.commit()
    db.close()
    (tmp_path / "dspex.seal").unlink()
    with ServeProcess("--data", str(tmp_path)) as server:
        client = SessionStoreProvider(server.address, timeout=10.0)
        try:
            assert client.get_variable("kept", "v").value == acked[-1].value
            assert client.set_variable("kept", "v", "next").revision == acked[-1].revision + 1
        finally:
            client.close()
    assert (tmp_path / "dspex.seal").exists()
