"""Bad data directories for ``dspex serve --data``: one clear line, exit 1, no data touched.

Unwritable (as root, permission bits do not stop writes, so the directory is made immutable
with ``chattr +i``), locked by another running server, from a newer format, and a full disk (a
small tmpfs; mounting needs root, the test is skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.serve_process import ServeProcess, run_dspex

from dspex import errors
from dspex._model import make_spec
from dspex.state.store import SessionStoreProvider

TEXT = make_spec(str)


def _files(directory: Path) -> dict[str, bytes]:
    """Every data file's bytes (the lock file only holds the pid of the last opener)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "dspex.lock"}


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused ``dspex serve`` printed (it must not have listened)."""
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("dspex: error: "), line
    return line


def _serve(directory: Path) -> subprocess.CompletedProcess[str]:
    return run_dspex("serve", "--address", "127.0.0.1:0", "--data", str(directory))


def _fill(directory: Path) -> None:
    """Create a data directory holding one session, then stop its server gracefully."""
    server = ServeProcess("--data", str(directory)).start()
    client = SessionStoreProvider(server.address)
    session_id = client.create_session("kept")
    client.register_variable(session_id, "instructions", TEXT, "Be brief.")
    client.close()
    assert server.stop() == 0


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable even for root (immutable), or by its mode for other users."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make {path} immutable as root: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_directory_locked_by_a_running_server_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServeProcess("--data", str(data)) as server:
        client = SessionStoreProvider(server.address)
        client.create_session("s")
        client.close()
        before = _files(data)
        assert server.process is not None
        line = _error_line(_serve(data))
        assert f"{data} is locked by another dspex server (pid {server.process.pid})" in line
        assert "another --data directory" in line
        assert _files(data) == before
        assert server.alive  # the running server is not disturbed


def test_a_data_file_of_a_newer_format_is_refused_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _fill(data)
    with contextlib.closing(sqlite3.connect(data / "dspex.sqlite3")) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
        db.commit()
    before = _files(data)
    line = _error_line(_serve(data))
    assert "format version 99, written by a newer dspex" in line and "upgrade dspex" in line
    assert _files(data) == before


def test_an_unwritable_parent_directory_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    with _read_only(parent):
        line = _error_line(_serve(parent / "data"))
    assert f"cannot use {parent / 'data'} as a data directory" in line
    assert "choose a writable directory for --data" in line
    assert list(parent.iterdir()) == []


def test_an_unwritable_data_directory_is_refused_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _fill(data)
    before = _files(data)
    with _read_only(data):
        line = _error_line(_serve(data))
    assert str(data) in line and ("cannot be written" in line or "cannot use" in line), line
    assert _files(data) == before


def test_a_file_given_as_data_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    line = _error_line(_serve(path))
    assert f"cannot use {path} as a data directory" in line
    assert path.read_text() == "mine"


def test_fsync_without_a_data_directory_is_refused() -> None:
    line = _error_line(run_dspex("serve", "--address", "127.0.0.1:0", "--fsync"))
    assert "--fsync needs --data DIR" in line


@contextlib.contextmanager
def _small_disk(tmp_path: Path, size: str = "512k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on a fresh directory (root only), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"a full disk needs a small tmpfs, and mount failed: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill_disk(mount: Path) -> Path:
    """Fill the tmpfs completely; returns the filler file (delete it to free the space)."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_at_start_is_refused(tmp_path: Path) -> None:
    with _small_disk(tmp_path) as mount:
        _fill_disk(mount)
        line = _error_line(_serve(mount / "data"))
        assert "No space left on device" in line or "is full" in line, line


def test_a_disk_filling_up_under_a_running_server_refuses_writes_cleanly(tmp_path: Path) -> None:
    with _small_disk(tmp_path, "2m") as mount:
        server = ServeProcess("--data", str(mount / "data")).start()
        client = SessionStoreProvider(server.address)
        try:
            sid = client.create_session()
            kept = client.register_variable(sid, "notes", TEXT, "start")
            filler = _fill_disk(mount)
            refused = 0
            for step in range(50):  # the WAL may still have room for a few writes
                try:
                    kept = client.set_variable(sid, "notes", f"{step:03d}" + "x" * 2000)
                except errors.StoreDataError as exc:
                    assert "is full" in str(exc) and "not applied" in str(exc), exc
                    refused += 1
            assert refused, "no write was refused on a full disk"
            assert client.get_variable(sid, "notes") == kept  # nothing half-applied
            assert server.alive
            filler.unlink()
            kept = client.set_variable(sid, "notes", "after")  # writes work again
            server.kill()
            server.start()
            assert client.get_variable(sid, "notes") == kept
            assert client.get_history(sid, "notes")[-1] == kept
        finally:
            client.close()
            server.kill()
