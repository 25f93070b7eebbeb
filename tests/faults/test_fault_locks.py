"""Fenced optimization locks (issue 12, item 3): a holder paused with SIGSTOP past its lease,
or preempted meanwhile, has its next write refused with an error saying the lock was lost, and
its lock object says so too; the counter holds exactly the writes that were accepted.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.faults import WAIT, record_figures
from support.serve_process import ServeProcess

import dspex
from dspex._model import make_spec
from dspex.state.store import SessionStoreProvider

INT = make_spec(int)
HOLDER = str(Path(__file__).with_name("lock_holder.py"))
LEASE = 2.0


class _Holder:
    """The lock_holder.py process: send it writes, read its answers."""

    def __init__(self, address: str, session_id: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, HOLDER, address, session_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.answer() == "HELD"

    def answer(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line, self.process.stderr.read() if self.process.stderr else "no output"
        return line

    def write(self) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write("write\n")
        self.process.stdin.flush()
        return self.answer()

    def end(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.communicate(timeout=WAIT)


@contextmanager
def _holding(server: ServeProcess) -> Iterator[tuple[SessionStoreProvider, str, _Holder]]:
    client = SessionStoreProvider(server.address, timeout=10.0)
    session_id = client.create_session()
    client.register_variable(session_id, "counter", INT, 100)
    holder = _Holder(server.address, session_id)
    try:
        yield client, session_id, holder
    finally:
        holder.end()
        client.close()


@pytest.mark.parametrize("rival", [False, True], ids=["lease-expired", "preempted"])
def test_paused_holder_cannot_write_after_losing_its_lock(rival: bool) -> None:
    with ServeProcess() as server, _holding(server) as (client, session_id, holder):
        assert [holder.write() for _ in range(3)] == ["WROTE 101", "WROTE 102", "WROTE 103"]
        holder.process.send_signal(signal.SIGSTOP)
        expected = 103
        if rival:
            with dspex.Session(store=server.address, session_id=session_id) as other:  # noqa: SIM117
                with other.optimizing("counter", optimizer_id="rival", policy="preempt"):
                    for _ in range(5):
                        other.set("counter", other.get("counter") + 1)
                        expected += 1
        else:
            time.sleep(LEASE + 1.0)  # the lease runs out while the holder is paused
        holder.process.send_signal(signal.SIGCONT)
        refused = holder.write()
        assert refused.startswith("REFUSED lost=True"), refused
        assert "the optimization lock on 'counter' was lost" in refused
        assert "this write was refused" in refused
        check = holder.answer()
        assert check.startswith("CHECK lost ['counter']"), check
        assert client.get_variable(session_id, "counter").value == expected
    record_figures(
        f"lock_{'preempted' if rival else 'expired'}_paused_holder",
        holder_writes_acknowledged=3, rival_writes=expected - 103, stale_writes_accepted=0,
    )  # fmt: skip
