"""Access control through the real store server: principals, permissions, ownership, filters."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.hardening import FLOAT, TOKENS, WAIT, served, standard_auth, write_auth_file
from support.serve_process import ServeProcess, run_dspex

import dspex
from dspex import errors
from dspex.state import LocalProvider
from dspex.state.store import AccessPolicy, SessionStoreProvider, StoreServer


@pytest.fixture(name="server")
def _server(local: LocalProvider) -> Iterator[StoreServer]:
    """The folder's ``server`` (tests/state/conftest.py), with the standard access policy."""
    with served(local, auth=AccessPolicy.from_dict(standard_auth())) as server:
        yield server


@pytest.fixture(name="clients")
def _clients(server: StoreServer) -> Iterator[dict[str, SessionStoreProvider]]:
    clients = {
        name: SessionStoreProvider(server.address, token=token, timeout=WAIT)
        for name, token in TOKENS.items()
    }
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture(name="sid")
def _sid(clients: dict[str, SessionStoreProvider]) -> str:
    owner = clients["owner"]
    session_id = owner.create_session()
    owner.register_variable(session_id, "a", FLOAT, 0.1)
    owner.register_variable(session_id, "b", FLOAT, 0.2)
    return session_id


def _unchanged(local: LocalProvider, sid: str) -> Callable[[], None]:
    """A check that the session's revision and records did not change since now."""
    before = (local.get_session(sid).revision, local.list_variables(sid))

    def check() -> None:
        assert (local.get_session(sid).revision, local.list_variables(sid)) == before

    return check


def test_calls_without_a_known_token_are_unauthenticated(
    server: StoreServer, local: LocalProvider, sid: str
) -> None:
    unchanged = _unchanged(local, sid)
    for token in (None, "not-a-token"):
        client = SessionStoreProvider(server.address, token=token, timeout=WAIT)
        calls: list[Callable[[], Any]] = [
            lambda c=client: c.ping(),
            lambda c=client: c.create_session(),
            lambda c=client: c.list_sessions(),
            lambda c=client: c.get_variable(sid, "a"),
            lambda c=client: c.set_variable(sid, "a", 0.5),
            lambda c=client: c.watch_variables(sid),
            lambda c=client: c.acquire_lock(sid, "a", owner="t", optimizer_id="x"),
            lambda c=client: c.close_session(sid),
        ]
        for call in calls:
            with pytest.raises(errors.UnauthenticatedError, match="token"):
                call()
        client.close()
    unchanged()
    assert [info.session_id for info in local.list_sessions()] == [sid]


def test_health_and_reflection_stay_open(server: StoreServer) -> None:
    channel = grpc.insecure_channel(server.address.removeprefix("grpc://"))
    try:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(reflection.ServerReflectionInfo(iter([request]), timeout=WAIT))
        assert answer.list_services_response.service
    finally:
        channel.close()


def test_sessions_belong_to_their_creator(
    clients: dict[str, SessionStoreProvider], sid: str
) -> None:
    owner = clients["owner"]
    info = owner.get_session(sid)
    assert info.owner == "owner"
    record = owner.set_variable(sid, "a", 0.3)
    assert record.writer.startswith("owner@")  # the store vouches for who wrote it
    with owner.watch_variables(sid) as watch:
        owner.set_variable(sid, "b", 0.4)
        update = watch.poll(WAIT)
    assert update is not None and update.name == "b"
    owner.acquire_lock(sid, "a", owner="tok", optimizer_id="grid")
    owner.release_lock(sid, "a", owner="tok")
    owner.close_session(sid)


def test_a_worker_may_read_but_not_write(
    clients: dict[str, SessionStoreProvider], local: LocalProvider, sid: str
) -> None:
    worker = clients["worker"]
    assert worker.get_variable(sid, "a").value == 0.1
    assert [r.name for r in worker.list_variables(sid)] == ["a", "b"]
    assert list(worker.get_variables(sid, ["a", "b"])) == ["a", "b"]
    assert [r.version for r in worker.get_history(sid, "a")] == [1]
    unchanged = _unchanged(local, sid)
    writes: list[Callable[[], Any]] = [
        lambda: worker.heartbeat(sid),  # keeping a session alive needs write (issue 12)
        lambda: worker.set_variable(sid, "a", 0.5),
        lambda: worker.update_variables(sid, {"a": 0.5}),
        lambda: worker.register_variable(sid, "c", FLOAT, 0.5),
        lambda: worker.delete_variable(sid, "a"),
        lambda: worker.rollback_variable(sid, "a", 1),
        lambda: worker.add_dependency(sid, "a", "b"),
        lambda: worker.acquire_lock(sid, "a", owner="t", optimizer_id="w"),
        lambda: worker.close_session(sid),
        lambda: worker.watch_variables(sid),  # reading is not observing
    ]
    for call in writes:
        with pytest.raises(errors.PermissionDeniedError, match="'worker' may not"):
            call()
    unchanged()
    assert local.get_dependencies(sid) == []
    with dspex.Session(store=worker.address, session_id=sid, token=TOKENS["worker"]) as joined:
        assert joined.get("b") == 0.2
        with pytest.raises(errors.PermissionDeniedError):
            joined.set("b", 0.9)


def test_a_watcher_may_observe_only_one_variable(
    clients: dict[str, SessionStoreProvider], sid: str
) -> None:
    owner, watcher = clients["owner"], clients["watcher"]
    for names in (["b"], ["a", "b"]):
        with pytest.raises(errors.PermissionDeniedError, match="observe"):
            watcher.watch_variables(sid, names)
    with pytest.raises(errors.PermissionDeniedError, match="read"):
        watcher.get_variable(sid, "a")  # observe is not read
    with (
        watcher.watch_variables(sid, ["a"], include_initial=True) as named,
        watcher.watch_variables(sid, include_initial=True) as everything,
    ):
        owner.set_variable(sid, "b", 0.9)
        owner.set_variable(sid, "a", 0.8)
        owner.set_variable(sid, "b", 1.0)
        owner.set_variable(sid, "a", 0.7)
        for watch in (named, everything):
            seen = [watch.poll(WAIT) for _ in range(3)]
            assert [(u.kind, u.name, u.record.value) for u in seen if u is not None] == [
                ("initial", "a", 0.1),
                ("set", "a", 0.8),
                ("set", "a", 0.7),
            ]
            assert watch.poll(0.3) is None  # nothing about "b" ever arrives


def test_streams_of_two_principals_share_a_session_feed_but_not_its_filter(
    clients: dict[str, SessionStoreProvider], sid: str
) -> None:
    """Both streams read the session's one feed; each sees only what its principal may."""
    owner, watcher = clients["owner"], clients["watcher"]
    with (
        owner.watch_variables(sid, after_revision=2) as everything,
        watcher.watch_variables(sid, after_revision=2) as observed,
    ):
        owner.set_variable(sid, "b", 0.9)
        owner.set_variable(sid, "a", 0.8)
        seen = [everything.poll(WAIT) for _ in range(2)]
        assert [(u.name, u.record.value) for u in seen if u] == [("b", 0.9), ("a", 0.8)]
        update = observed.poll(WAIT)
        assert update is not None and (update.name, update.record.value) == ("a", 0.8)
        assert observed.poll(0.3) is None  # "b" never reaches the watcher


def test_a_learned_session_id_is_useless_to_another_principal(
    clients: dict[str, SessionStoreProvider], local: LocalProvider, sid: str
) -> None:
    eve = clients["eve"]
    mine = eve.create_session()  # eve may create sessions: they are her own
    assert [info.session_id for info in eve.list_sessions()] == [mine]
    unchanged = _unchanged(local, sid)
    attempts: list[Callable[[], Any]] = [
        lambda: eve.get_session(sid),
        lambda: eve.create_session(sid),  # joining by id
        lambda: eve.heartbeat(sid),
        lambda: eve.get_variable(sid, "a"),
        lambda: eve.list_variables(sid),
        lambda: eve.set_variable(sid, "a", 0.5),
        lambda: eve.watch_variables(sid),
        lambda: eve.get_dependencies(sid),
        lambda: eve.acquire_lock(sid, "a", owner="t", optimizer_id="eve"),
        lambda: eve.close_session(sid),
    ]
    for attempt in attempts:
        with pytest.raises(errors.PermissionDeniedError, match="'eve'"):
            attempt()
    unchanged()
    assert eve.get_session(mine).owner == "eve"
    with pytest.raises(errors.SessionNotFoundError):  # an id nobody has: no permission to leak
        eve.get_variable("no-such-session", "a")


def test_listing_shows_only_what_may_be_read(server: StoreServer, local: LocalProvider) -> None:
    sid = local.create_session("s-1")
    for name in ("temp_a", "temp_b", "secret"):
        local.register_variable(sid, name, FLOAT, 0.5)
    local.add_dependency(sid, "temp_a", "temp_b")
    local.add_dependency(sid, "temp_b", "secret")
    local.create_session("other")
    policy = AccessPolicy.from_dict(
        {
            "principals": {"partial": {"token": "p"}},
            "rules": [
                {
                    "principal": "partial",
                    "sessions": "s-*",
                    "variables": "temp*",
                    "allow": ["read"],
                }
            ],
        }
    )
    with served(local, auth=policy) as partial_server:
        client = SessionStoreProvider(partial_server.address, token="p")
        try:
            assert [i.session_id for i in client.list_sessions()] == ["s-1"]
            assert [r.name for r in client.list_variables(sid)] == ["temp_a", "temp_b"]
            assert client.get_dependencies(sid) == [("temp_a", "temp_b")]
            assert client.get_dependents(sid, "temp_a") == ["temp_b"]
            with pytest.raises(errors.PermissionDeniedError):
                client.get_variable(sid, "secret")
        finally:
            client.close()


def test_the_token_comes_from_dspex_token(
    server: StoreServer, sid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPEX_TOKEN", TOKENS["worker"])
    client = SessionStoreProvider(server.address)
    try:
        assert client.get_variable(sid, "a").value == 0.1
    finally:
        client.close()
    monkeypatch.setenv("DSPEX_TOKEN", TOKENS["owner"])
    with dspex.Session(store=server.address) as session:
        assert session.provider.get_session(session.session_id).owner == "owner"


def test_dspex_serve_with_an_auth_file(tmp_path: Path) -> None:
    auth = write_auth_file(tmp_path)
    with ServeProcess("--auth-file", str(auth)) as store:
        owner = SessionStoreProvider(store.address, token=TOKENS["owner"], timeout=WAIT)
        try:
            sid = owner.create_session()
            owner.register_variable(sid, "a", FLOAT, 0.1)
            common = ("--store", store.address, "--session", sid, "--json")
            denied = run_dspex("vars", "set", "a", "0.5", *common, "--token", TOKENS["worker"])
            assert denied.returncode == 1
            assert "may not write" in denied.stderr and "Traceback" not in denied.stderr
            read = run_dspex("vars", "get", "a", *common, "--token", TOKENS["worker"])
            assert read.returncode == 0, read.stderr
            assert json.loads(read.stdout)["value"] == 0.1
            anonymous = run_dspex("vars", "get", "a", *common)
            assert anonymous.returncode == 1 and "token" in anonymous.stderr
        finally:
            owner.close()


@pytest.mark.parametrize(
    "flags",
    [
        ("--auth-file", "{missing}"),
        ("--auth-file", "{bad}"),
        ("--auth-file", "{good}", "--token", "also"),
    ],
)
def test_dspex_serve_refuses_bad_auth_settings_in_one_line(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"principals": {"a": {"token": "x"}}, "rules": [{"principal": "b"}]})
    )
    paths = {"missing": tmp_path / "nope.json", "bad": bad, "good": write_auth_file(tmp_path)}
    args = [flag.format(**paths) for flag in flags]
    result = run_dspex("serve", "--address", "127.0.0.1:0", *args)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dspex: error:"), result.stderr
