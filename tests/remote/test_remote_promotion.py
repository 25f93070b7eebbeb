"""Transparent promotion: a local session becomes reachable by a real store server, unchanged.

Every check goes through a real gRPC server (the embedded one, on a unix socket) and a real
client; "local stays light" runs in a fresh interpreter.
"""

from __future__ import annotations

import contextvars
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex._model import VariableRecord
from dspex.errors import LockedError, SessionClosedError, StoreUnavailableError
from dspex.state.store import SessionStoreProvider, StoreServer

pytestmark = pytest.mark.timeout(120)


def row(record: VariableRecord) -> tuple[Any, ...]:
    """What a record says, comparable across the wire."""
    return (
        record.name, record.spec, record.value, record.version, record.revision,
        record.updated_at, record.writer, record.stale,
    )  # fmt: skip


def build_state(session: dspex.Session) -> None:
    session.register("temperature", float, 0.7, min=0.0, max=2.0)
    session.register("instructions", str, "Answer briefly.", max_length=200)
    session.register("demos", "json", [{"question": "2+2?", "answer": "4"}])
    for value in (0.1, 0.2, 0.3):
        session.set("temperature", value)
    session.rollback("temperature", 2)
    session.update({"instructions": "Think step by step.", "demos": []})


def test_promotion_serves_the_same_variables_versions_history_and_revision(
    session: dspex.Session,
) -> None:
    build_state(session)
    names = ("temperature", "instructions", "demos")
    history = {name: [row(r) for r in session.history(name)] for name in names}
    revision = session.provider.get_session(session.session_id).revision
    assert (session.backend, session.address) == ("local", None)

    address = session.promote()

    assert session.backend == "session_store"
    assert session.address == address
    assert address.startswith("unix://")
    assert session.promote() == address  # idempotent: one server per session
    client = SessionStoreProvider(address)
    try:
        for name in names:
            assert [row(r) for r in client.get_history(session.session_id, name)] == history[name]
        assert client.get_session(session.session_id).revision == revision
        assert [r.name for r in client.list_variables(session.session_id)] == sorted(names)
        # One store, one revision sequence: writes from either side see each other at once.
        remote_write = client.set_variable(session.session_id, "temperature", 1.5)
        assert remote_write.revision == revision + 1
        assert session.variable("temperature") == remote_write
        local_write = session.set("instructions", "Be exact.")
        assert local_write.revision == revision + 2
        assert client.get_variable(session.session_id, "instructions").value == "Be exact."
    finally:
        client.close()


def test_the_socket_is_private_and_the_server_stops_when_the_session_closes() -> None:
    with dspex.Session() as session:
        session.register("temperature", float, 0.7)
        address = session.promote()
        socket_path = Path(address[len("unix://") :])
        directory_mode = stat.S_IMODE(socket_path.parent.stat().st_mode)
        assert directory_mode == 0o700
        assert stat.S_ISSOCK(socket_path.stat().st_mode)
        client = SessionStoreProvider(address, timeout=2.0)
        assert client.get_variable(session.session_id, "temperature").value == 0.7
    assert session.closed
    assert not socket_path.parent.exists()
    try:
        with pytest.raises(StoreUnavailableError):
            client.get_variable(session.session_id, "temperature")
    finally:
        client.close()


def test_a_watch_opened_before_promotion_keeps_delivering_local_and_remote_writes(
    session: dspex.Session,
) -> None:
    session.register("temperature", float, 0.7)
    with session.watch("temperature") as updates:
        session.set("temperature", 0.1)
        address = session.promote()
        session.set("temperature", 0.2)
        client = SessionStoreProvider(address)
        try:
            client.set_variable(session.session_id, "temperature", 0.3)
        finally:
            client.close()
        seen = [updates.poll(timeout=10) for _ in range(3)]
    assert [u.record.value for u in seen if u is not None] == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("promote_first", [True, False])
def test_an_optimization_lock_held_in_process_still_binds_store_clients(
    session: dspex.Session, promote_first: bool
) -> None:
    session.register("temperature", float, 0.7)
    address = session.promote() if promote_first else ""
    with session.optimizing("temperature", optimizer_id="grid-search"):
        address = address or session.promote()
        client = SessionStoreProvider(address)
        try:
            # A writer outside the optimizer's context (it carries no lock token) is refused.
            outsider = contextvars.Context()
            with pytest.raises(LockedError, match="grid-search"):
                outsider.run(client.set_variable, session.session_id, "temperature", 1.0)
            # The optimizer itself may write, in process and through the store alike.
            session.set("temperature", 0.4)
            client.set_variable(session.session_id, "temperature", 0.5)
        finally:
            client.close()
    assert session.get("temperature") == 0.5
    assert session.variable("temperature").lock is None


def test_promotion_is_thread_safe_one_server_for_concurrent_callers(
    session: dspex.Session,
) -> None:
    addresses: list[str] = []
    threads = [
        threading.Thread(target=lambda: addresses.append(session.promote())) for _ in (1, 2, 3, 4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(addresses)) == 1


def test_a_session_already_in_a_store_is_not_promoted_again() -> None:
    with StoreServer.start(address="127.0.0.1:0") as server, dspex.Session(server.address) as s:
        assert s.backend == "session_store"
        assert s.address == server.address
        assert s.promote() == server.address


def test_a_closed_session_cannot_be_promoted() -> None:
    session = dspex.Session()
    session.close()
    with pytest.raises(SessionClosedError, match="closed"):
        session.promote()


LOCAL_PROGRAM = textwrap.dedent(
    """
    import json, sys
    import dspy, dspex

    class QA(dspex.Program):
        temperature = dspex.Variable(float, 0.7, min=0.0, max=2.0)
        model = dspex.Variable(str, "dspex/sim")

        def __init__(self):
            super().__init__()
            self.answer = dspex.bind(
                dspy.Predict("question -> answer"), temperature=QA.temperature, lm=QA.model
            )

        def forward(self, question):
            return self.answer(question=question)

    with dspex.Session() as session:
        program = QA()
        first = program(question="What is 2 + 3?").answer
        session.set("temperature", 0.1)
        second = program(question="What is 2 + 3?").answer
        backend, address = session.backend, session.address
    print(json.dumps({
        "answers": [first, second], "backend": backend, "address": address,
        "grpc": sorted(m for m in sys.modules if m.split(".")[0] == "grpc" or "_proto" in m),
    }))
    """
)


def test_a_pure_local_program_never_starts_a_server_or_imports_grpc() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", LOCAL_PROGRAM],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["answers"] == ["5", "5"]
    assert (result["backend"], result["address"]) == ("local", None)
    assert result["grpc"] == []
