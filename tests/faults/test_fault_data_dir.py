"""A ``dspex serve --data`` directory taken away under the running server: removed, moved away,
or its write-ahead log deleted (the server would go on writing to the files it holds open, which
nobody can reach any more). No write may be acknowledged and then lost: each is refused with a
clear error and nothing of it applied, and once the directory is back writes go on and survive a
restart. (A disk that fills up, and an unwritable directory, are in
``tests/cli/test_serve_bad_data.py``.)
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.faults import TEXT
from support.serve_process import ServeProcess

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
