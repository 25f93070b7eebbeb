"""A ``dspex serve --data`` directory that changes under the running server: removed or moved
away (the server would go on writing to the data file it holds open, which nobody can reach any
more), or on a disk that fills up (a small tmpfs). No write may be acknowledged and then lost:
each is refused with a clear error and nothing of it applied, and what was acknowledged is there
after a restart.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.faults import TEXT, record_figures
from support.serve_process import ServeProcess, run_dspex

from dspex import errors
from dspex.state.store import SessionStoreProvider

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def _serving(directory: Path) -> Iterator[tuple[ServeProcess, SessionStoreProvider]]:
    with ServeProcess("--data", str(directory)) as server:
        client = SessionStoreProvider(server.address, timeout=10.0)
        try:
            yield server, client
        finally:
            client.close()


@pytest.mark.parametrize("how", ["removed", "moved", "wal-deleted"])
def test_writes_to_a_data_directory_taken_away_are_refused(tmp_path: Path, how: str) -> None:
    directory, aside = tmp_path / "data", tmp_path / "aside"
    with _serving(directory) as (server, client):
        client.create_session("s")
        client.register_variable("s", "v", TEXT, "before")
        gone = directory / "dspex.sqlite3"
        if how == "removed":
            shutil.rmtree(directory)
        elif how == "moved":
            directory.rename(aside)
        else:  # a "cleanup" of -wal files: the writes since the last checkpoint are lost
            gone = directory / "dspex.sqlite3-wal"
            gone.unlink()
        with pytest.raises(errors.StoreDataError) as refused:
            client.set_variable("s", "v", "while away")  # acknowledged and lost, before
        assert f"{gone} was removed or replaced while the server ran" in str(refused.value)
        assert "The change was not applied" in str(refused.value)
        assert client.get_variable("s", "v").value == "before"  # nothing half applied
        if how != "moved":
            return
        aside.rename(directory)  # put back: writes go on
        acked = client.set_variable("s", "v", "after").revision
        server.kill()
        server.start()
        again = SessionStoreProvider(server.address, timeout=10.0)
        try:
            record = again.get_variable("s", "v")
            assert (record.value, record.revision) == ("after", acked)
        finally:
            again.close()


@contextlib.contextmanager
def _small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (skip the test where mounting is not allowed)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


VALUE = 64 * 1024
"""Bytes per value: a few dozen fill the small disk."""


def test_a_full_disk_refuses_writes_and_loses_none_it_acknowledged(tmp_path: Path) -> None:
    with _small_disk(tmp_path / "disk", "2m") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * 512 * 1024)  # freed later, to make room again
        directory = disk / "data"
        with _serving(directory) as (server, client):
            client.create_session("s")
            acked = client.register_variable("s", "v", TEXT, "0")
            refused: errors.StoreDataError | None = None
            for count in range(1, 200):
                try:
                    acked = client.set_variable("s", "v", f"{count}:" + "x" * VALUE)
                except errors.StoreDataError as exc:
                    refused = exc
                    break
            assert refused is not None, "the 2 MiB disk never filled"
            assert "is full" in str(refused) and "the change was not applied" in str(refused)
            assert client.get_variable("s", "v") == acked  # the refused write left no trace
            filler.unlink()
            after = client.set_variable("s", "v", "after the disk had room again")
            server.kill()
            server.start()
            again = SessionStoreProvider(server.address, timeout=10.0)
            try:
                assert again.get_variable("s", "v") == after
                history = again.get_history("s", "v")
            finally:
                again.close()
        assert acked in history  # the last write before the disk filled was kept too
    record_figures("sqlite_disk_full", acknowledged=count, refused=1, lost=0)


def test_a_data_directory_on_a_read_only_disk_is_refused_at_start(tmp_path: Path) -> None:
    """A running server's disk cannot be remounted read-only (the kernel says it is busy while
    the data file is open for writing), so the case that happens is the restart after."""
    with _small_disk(tmp_path / "disk", "4m") as disk:
        directory = disk / "data"
        with _serving(directory) as (_server, client):
            client.create_session("s")
            client.register_variable("s", "v", TEXT, "kept")
        remounted = subprocess.run(
            ["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True, check=False
        )
        assert remounted.returncode == 0, remounted.stderr
        refused = run_dspex("serve", "--address", "127.0.0.1:0", "--data", str(directory))
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused
        assert f"cannot use {directory} as a data directory" in refused.stderr
        assert "Read-only file system" in refused.stderr
