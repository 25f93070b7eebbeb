"""Durability through the server: ``dspex serve --data DIR`` killed with SIGKILL and restarted.

Every acknowledged write (value, version, history entry, revision) must be there after the
restart, and watchers resume from the last revision they received with no gap and no
duplicate. The load runs through real clients against a real server process.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
from support import full_log, wait_until
from support.durability import WAIT, CacheReader, Follower, Writer
from support.serve_process import ServeProcess

from dspex._model import VariableRecord, VariableUpdate, make_spec
from dspex.state.store import SessionStoreProvider

INT = make_spec(int)
KEEP_ALL = ("--history-size", "1000000", "--log-size", "1000000")


def _durable(tmp_path: Path, *flags: str) -> ServeProcess:
    return ServeProcess("--data", str(tmp_path / "data"), *KEEP_ALL, *flags)


def _snapshot(client: SessionStoreProvider, session_id: str) -> dict[str, object]:
    records = client.list_variables(session_id)
    return {
        "revision": client.get_session(session_id).revision,
        "records": records,
        "history": {r.name: client.get_history(session_id, r.name) for r in records},
        "log": full_log(client, session_id),
    }


@pytest.mark.parametrize("flags", [(), ("--fsync",)], ids=["default", "fsync"])
def test_a_kill_9_keeps_every_acknowledged_record_history_and_revision(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    server = _durable(tmp_path, *flags).start()
    client = SessionStoreProvider(server.address)
    try:
        sid = client.create_session("durable")
        client.register_variable(sid, "temperature", make_spec(float, max=2.0), 0.7)
        client.register_variable(sid, "instructions", make_spec(str), "Be brief.")
        client.register_variable(sid, "demos", make_spec(list), [])
        client.register_variable(sid, "weights", make_spec("tensor", shape=(2, 2)), np.eye(2))
        client.register_variable(sid, "scratch", INT, 0)
        for value in (0.1, 0.2, 0.3):
            client.set_variable(sid, "temperature", value)
        client.update_variables(
            sid, {"instructions": "Answer in French.", "demos": [{"q": "x", "a": "y"}]},
            atomic=True,
        )  # fmt: skip
        client.rollback_variable(sid, "temperature", 2)
        client.set_variable(sid, "weights", np.arange(4.0).reshape(2, 2))
        client.delete_variable(sid, "scratch")
        before = _snapshot(client, sid)
        server.kill()
        server.start()
        after = _snapshot(client, sid)
        assert _comparable(after) == _comparable(before)
        assert client.get_variable(sid, "temperature").value == 0.1
        assert np.array_equal(client.get_variable(sid, "weights").value, [[0, 1], [2, 3]])
        # The revision counter goes on from where it was: no revision is ever reused.
        assert client.set_variable(sid, "temperature", 0.5).revision == before["revision"] + 1
    finally:
        client.close()
        server.kill()


def _comparable(snapshot: dict[str, object]) -> object:
    """The snapshot with arrays as lists (numpy arrays do not compare with ==)."""

    def plain(record: VariableRecord) -> tuple[object, ...]:
        value = record.value.tolist() if isinstance(record.value, np.ndarray) else record.value
        return (*record._replace(value=None), value)

    def plain_update(update: VariableUpdate) -> tuple[object, ...]:
        return (update.revision, update.kind, update.name, plain(update.record))

    return (
        snapshot["revision"],
        [plain(r) for r in snapshot["records"]],  # type: ignore[attr-defined]
        {n: [plain(r) for r in h] for n, h in snapshot["history"].items()},  # type: ignore[attr-defined]
        [plain_update(u) for u in snapshot["log"]],  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize(
    "cycles",
    [pytest.param(3, id="3-cycles"), pytest.param(20, id="20-cycles", marks=pytest.mark.slow)],
)
@pytest.mark.timeout(240)
def test_kill_restart_cycles_under_load_lose_no_acknowledged_write(
    tmp_path: Path, cycles: int
) -> None:
    server = _durable(tmp_path).start()
    admin = SessionStoreProvider(server.address, timeout=WAIT)
    sid = admin.create_session()
    for name in ("a", "x", "y"):
        admin.register_variable(sid, name, INT, 0)
    writers = [
        Writer(server.address, sid, ["a"], batch=False),
        Writer(server.address, sid, ["x", "y"], batch=True),
    ]
    follower = Follower(server.address, sid)
    reader = CacheReader(server.address, sid, "a")
    load = [*writers, follower, reader]
    for thread in load:
        thread.start()
    rng = random.Random(6)
    try:
        for _ in range(cycles):
            assert _progress(writers, 20), "the writers made no progress after a restart"
            assert _caught_up(follower, writers), "the watcher did not resume"
            time.sleep(rng.uniform(0, 0.03))  # kill at a random point of the load
            server.kill()
            time.sleep(rng.uniform(0, 0.05))  # writes keep failing while it is down
            server.start()
        assert _progress(writers, 20)
        for writer in writers:
            writer.finish()
        head = admin.get_session(sid).revision
        assert wait_until(lambda: follower.last >= head), (follower.last, head)
        final = admin.get_variable(sid, "a").version
        assert wait_until(lambda: reader.newest == final), (reader.newest, final)
        follower.finish()
        reader.finish()
        _check_acknowledged(admin, sid, writers)
        _check_follower(admin, sid, follower, cycles)
        assert reader.backwards == [], "a cached read went back in time"
        assert all(w.unavailable for w in writers), "the writers never hit a dead server"
    finally:
        for thread in load:
            thread.halt.set()
        admin.close()
        server.kill()


def _progress(writers: list[Writer], writes: int) -> bool:
    """Wait until the writers got ``writes`` more acknowledgements (False on timeout)."""
    target = sum(len(w.acked) for w in writers) + writes
    return wait_until(lambda: sum(len(w.acked) for w in writers) >= target)


def _caught_up(follower: Follower, writers: list[Writer]) -> bool:
    """Wait until the watcher received the newest acknowledged write (False on timeout)."""
    newest = max(w.acked[-1].revision for w in writers)
    return wait_until(lambda: follower.last >= newest)


def _check_acknowledged(client: SessionStoreProvider, sid: str, writers: list[Writer]) -> None:
    """Every acknowledged write is in the history and the change log, exactly as acked."""
    log = {u.revision: u for u in full_log(client, sid)}
    assert sorted(log) == list(range(1, len(log) + 1)), "the change log has a gap"
    for name in ("a", "x", "y"):
        history = client.get_history(sid, name)
        versions = [r.version for r in history]
        assert versions == list(range(1, len(history) + 1)), f"{name}: versions have a gap"
        revisions = [r.revision for r in history]
        assert revisions == sorted(set(revisions)), f"{name}: revisions not increasing"
        assert client.get_variable(sid, name) == history[-1]
    histories = {n: {r.version: r for r in client.get_history(sid, n)} for n in ("a", "x", "y")}
    total = 0
    for writer in writers:
        for name in writer.names:
            acked = [r for r in writer.acked if r.name == name]
            assert [r.version for r in acked] == sorted({r.version for r in acked})
            for record in acked:
                kept = histories[name].get(record.version)
                assert kept is not None, f"acknowledged {record} lost"
                assert (kept.value, kept.revision) == (record.value, record.revision), record
                logged = log[record.revision]
                assert (logged.name, logged.record.value, logged.record.version) == (
                    name, record.value, record.version,
                )  # fmt: skip
            total += len(acked)
    assert total > 0


def _check_follower(
    client: SessionStoreProvider, sid: str, follower: Follower, cycles: int
) -> None:
    """The watcher got every change once, in order, across all the restarts."""
    revisions = [u.revision for u in follower.received]
    assert revisions == list(range(1, len(revisions) + 1)), "the watcher saw a gap or a duplicate"
    log = full_log(client, sid)
    got = [(u.revision, u.name, u.record.value, u.record.version) for u in follower.received]
    assert got == [(u.revision, u.name, u.record.value, u.record.version) for u in log]
    # The watcher was live at every kill, and each lost stream named the revision to resume
    # from: the last one the watcher received.
    assert len(follower.resumes) == cycles
    assert all(named == last for named, last in follower.resumes), follower.resumes
