"""Smaller abuses through a real ``dspex serve --auth-file`` (issue 12, items 6 and 8): session
ids that are not names, a read-only principal keeping another's session alive, and a worker
joining a session a squatter pre-created under the agreed id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from support.serve_process import ServeProcess

import dspex
from dspex import errors
from dspex.state import SessionContext
from dspex.state.store import SessionStoreProvider

TOKENS = {"alice": "tok-alice", "eve": "tok-eve", "worker": "tok-worker", "reader": "tok-reader"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    everything = ["read", "write", "observe", "optimize", "serve"]
    rules = [
        {"principal": "alice", "sessions": "@own", "allow": everything},
        {"principal": "eve", "sessions": "@own", "allow": everything},
        {"principal": "worker", "sessions": "*", "allow": ["read", "write"]},
        {"principal": "reader", "sessions": "*", "allow": ["read"]},
    ]
    principals = {name: {"token": token} for name, token in TOKENS.items()}
    path = tmp_path_factory.mktemp("auth") / "auth.json"
    path.write_text(json.dumps({"principals": principals, "rules": rules}))
    with ServeProcess("--auth-file", str(path)) as server:
        yield server


def _client(store: ServeProcess, principal: str) -> SessionStoreProvider:
    return SessionStoreProvider(store.address, token=TOKENS[principal], timeout=10.0)


@pytest.mark.parametrize(
    "session_id",
    ["a\x00b", "two\nlines", "\x1b[31mred\x1b[0m", "x" * 257, "y" * 1_000_000],
    ids=["nul", "newline", "ansi", "257", "1MB"],
)
def test_session_ids_are_validated_like_names(store: ServeProcess, session_id: str) -> None:
    alice = _client(store, "alice")
    try:
        with pytest.raises(errors.ConstraintError, match="must be a printable string of 1-256"):
            alice.create_session(session_id)
        assert all(s.session_id != session_id for s in alice.list_sessions())
    finally:
        alice.close()


def test_a_read_only_principal_cannot_keep_a_session_alive(store: ServeProcess) -> None:
    alice, reader = _client(store, "alice"), _client(store, "reader")
    try:
        session_id = alice.create_session(ttl=30.0)
        assert reader.get_session(session_id).owner == "alice"  # it may read
        with pytest.raises(errors.PermissionDeniedError, match="may not write"):
            reader.heartbeat(session_id)
        alice.heartbeat(session_id)
    finally:
        alice.close()
        reader.close()


def test_joining_checks_the_owner_when_asked(store: ServeProcess) -> None:
    eve = _client(store, "eve")
    try:
        squatted = eve.create_session("job-42")  # the id alice and her workers agreed on
        for join in (
            lambda: dspex.Session(
                store.address, session_id=squatted, token=TOKENS["worker"], owner="alice"
            ),
            lambda: SessionContext.connect(
                store.address, squatted, token=TOKENS["worker"], owner="alice"
            ),
        ):
            with pytest.raises(errors.PermissionDeniedError, match="is owned by 'eve', not"):
                join()
        view = dspex.Session(store.address, session_id=squatted, token=TOKENS["worker"])
        view.close()  # without owner=..., joining any readable session still works
    finally:
        eve.close()
