"""SessionStoreProvider: addresses, unix sockets, pickling, client-mode sessions, lazy imports."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from support.bridge import FLOAT, child_read_pickled, served, spawn

import dspex
import dspex.errors as errors
from dspex.state import LocalProvider, SessionContext
from dspex.state.client.convert import get_variable_result
from dspex.state.store import CachedProvider, SessionStoreProvider, StoreServer
from dspex.state.wire.channel import parse_address


@pytest.mark.parametrize(
    ("address", "target", "url"),
    [
        ("grpc://127.0.0.1:50051", "127.0.0.1:50051", "grpc://127.0.0.1:50051"),
        ("localhost:7", "localhost:7", "grpc://localhost:7"),
        ("[::1]:50051", "[::1]:50051", "grpc://[::1]:50051"),
        ("unix:///tmp/s.sock", "unix:/tmp/s.sock", "unix:///tmp/s.sock"),
    ],
)
def test_addresses_parse_to_one_canonical_form(address: str, target: str, url: str) -> None:
    parsed = parse_address(address)
    assert (parsed.target, parsed.url) == (target, url)
    assert parse_address(parsed.url) == parsed


def test_relative_unix_address_becomes_absolute() -> None:
    parsed = parse_address("unix:store.sock")
    assert parsed.url == f"unix://{os.path.abspath('store.sock')}"


@pytest.mark.parametrize(
    "address", ["", "nohost", "grpc://host", "host:port", "http://h:1", "unix:"]
)
def test_bad_addresses_are_refused_clearly(address: str) -> None:
    with pytest.raises(errors.StoreError, match="not understood"):
        SessionStoreProvider(address)


def test_unix_socket_server_and_client(tmp_path: Path) -> None:
    local = LocalProvider()
    with served(local, f"unix:{tmp_path / 'store.sock'}") as server:
        assert server.address == f"unix://{tmp_path / 'store.sock'}"
        client = SessionStoreProvider(server.address)
        session_id = client.create_session()
        client.register_variable(session_id, "t", FLOAT, 0.5)
        with client.watch_variables(session_id) as watch:
            local.set_variable(session_id, "t", 0.25)
            update = watch.poll(10)
        assert update is not None and update.record.value == 0.25
        client.close()
    assert not (tmp_path / "store.sock").exists()  # the socket file is removed on stop


def test_relative_unix_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with served(None, "unix:rel.sock") as server:
        client = SessionStoreProvider("unix:rel.sock")
        assert client.ping("hello") == "hello"
        assert server.address == client.address
        client.close()


def test_client_pickles_and_rebuilds_its_channel(
    client: SessionStoreProvider, session_id: str
) -> None:
    with client.watch_variables(session_id):  # a live stream is not part of the state
        copy = pickle.loads(pickle.dumps(client))
    assert copy.address == client.address and copy.timeout == client.timeout
    assert copy.get_variable(session_id, "t").value == 0.7
    copy.set_variable(session_id, "t", 0.3)
    assert client.get_variable(session_id, "t").value == 0.3
    copy.close()
    copy.close()  # idempotent
    assert copy.get_variable(session_id, "t").value == 0.3  # reconnects lazily after close


def test_cached_provider_pickles(client: SessionStoreProvider, session_id: str) -> None:
    cached = CachedProvider(client)
    cached.follow(session_id)
    copy = pickle.loads(pickle.dumps(cached))
    assert copy.get_variable(session_id, "t").value == 0.7
    copy.close()
    cached.close()


def test_pickled_client_works_in_a_spawned_process(
    client: SessionStoreProvider, session_id: str
) -> None:
    client.set_variable(session_id, "t", 1.5)
    assert spawn(child_read_pickled, client, session_id, "t") == 1.5


def test_session_client_mode_behaves_like_local(server: StoreServer) -> None:
    with dspex.Session(store=server.address) as session:
        assert session.backend == "session_store"
        session.register("temperature", float, 0.7, min=0.0, max=2.0)
        assert session.set("temperature", 0.2).version == 2
        with pytest.raises(errors.VariableValueError):
            session.set("temperature", 3.0)
        assert session.get("temperature") == 0.2
        session.update({"temperature": 0.4})
        assert [r.value for r in session.history("temperature")] == [0.7, 0.2, 0.4]
        assert session.rollback("temperature", 1).value == 0.7
        assert [r.name for r in session.list("temp*")] == ["temperature"]
        with session.watch("temperature") as updates:
            session.set("temperature", 0.9)
            update = updates.poll(10)
        assert update is not None and update.record.value == 0.9
        session_id = session.session_id
        with dspex.Session(store=server.address, session_id=session_id) as joined:
            assert joined.get("temperature") == 0.9
    with pytest.raises(errors.SessionClosedError):
        SessionStoreProvider(server.address).get_session(session_id)


def test_session_context_connect(server: StoreServer, client: SessionStoreProvider) -> None:
    session_id = client.create_session()
    client.register_variable(session_id, "t", FLOAT, 0.7)
    context = SessionContext.connect(server.address, session_id)
    try:
        assert context.get("t") == 0.7
        assert context.set("t", 0.1).version == 2
        assert context.get("t") == 0.1  # read-your-writes
    finally:
        context.provider.close()
    with pytest.raises(errors.SessionNotFoundError):
        SessionContext.connect(server.address, "nope")
    with pytest.raises(errors.StoreUnavailableError):
        SessionContext.connect("grpc://127.0.0.1:1", session_id)


def test_import_dspex_and_local_mode_do_not_load_grpc() -> None:
    code = (
        "import sys, dspex, dspex.state\n"
        "with dspex.Session() as s:\n"
        "    s.register('t', float, 0.5)\n"
        "    s.set('t', 0.6)\n"
        "loaded = [m for m in sys.modules if m == 'grpc' or m.startswith('dspex._proto')]\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_ping_echoes(client: SessionStoreProvider) -> None:
    assert client.ping("abc") == "abc"
    assert repr(client) == f"SessionStoreProvider({client.address!r})"


def test_a_hot_get_decodes_once_until_the_variable_changes(
    client: SessionStoreProvider, session_id: str
) -> None:
    first = client.get_variable(session_id, "t")
    assert client.get_variable(session_id, "t") is first  # same bytes: the record decoded then
    client.set_variable(session_id, "t", 0.25)
    changed = client.get_variable(session_id, "t")
    assert (changed.value, changed.version) == (0.25, first.version + 1)
    assert client.get_variable(session_id, "t") is changed
    other = client.create_session()
    client.register_variable(other, "t", FLOAT, 0.5)
    assert client.get_variable(other, "t").value == 0.5  # requests are cached per session
    assert client.get_variable(session_id, "t").value == 0.25


def test_get_errors_keep_their_classes(client: SessionStoreProvider, session_id: str) -> None:
    with pytest.raises(errors.VariableNotFoundError, match="nope"):
        client.get_variable(session_id, "nope")
    client.close_session(session_id)
    with pytest.raises(errors.SessionError):
        client.get_variable(session_id, "t")


def test_a_malformed_get_response_is_a_protocol_error() -> None:
    with pytest.raises(errors.StoreProtocolError, match="malformed GetVariable response"):
        get_variable_result(b"\xff\xff\xff")
