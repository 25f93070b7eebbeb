"""TLS and mutual TLS through the real store server, with certificates made at test time."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hardening import FLOAT, WAIT, Pki, make_pki, served

import dspex
from dspex import errors
from dspex.state import LocalProvider, SessionContext
from dspex.state.store import ServerTls, SessionStoreProvider, StoreServer

DSPEX = str(Path(sys.executable).parent / "dspex")


@pytest.fixture(name="pki", scope="module")
def _pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(name="tls_server")
def _tls_server(pki: Pki) -> Iterator[StoreServer]:
    with served(LocalProvider(), tls=ServerTls.load(pki.server_cert, pki.server_key)) as server:
        yield server


def test_a_tls_server_serves_grpcs_clients_that_trust_it(
    tls_server: StoreServer, pki: Pki
) -> None:
    assert tls_server.address.startswith("grpcs://127.0.0.1:")
    client = SessionStoreProvider(tls_server.address, root_cert=pki.ca, timeout=WAIT)
    try:
        sid = client.create_session()
        client.register_variable(sid, "t", FLOAT, 0.5)
        with client.watch_variables(sid) as watch:  # streams use TLS too
            client.set_variable(sid, "t", 0.6)
            update = watch.poll(WAIT)
        assert update is not None and update.record.value == 0.6
        client.acquire_lock(sid, "t", owner="tok", optimizer_id="grid")  # HoldLocks too
        context = SessionContext(client, sid)
        assert context.get("t") == 0.6
    finally:
        client.close()


def test_plaintext_and_untrusting_clients_are_refused(tls_server: StoreServer, pki: Pki) -> None:
    port = tls_server.address.rpartition(":")[2]
    plaintext = SessionStoreProvider(f"grpc://127.0.0.1:{port}", timeout=3)
    untrusting = SessionStoreProvider(tls_server.address, root_cert=pki.other_ca, timeout=3)
    try:
        for client in (plaintext, untrusting):
            with pytest.raises(errors.StoreUnavailableError):
                client.create_session()
    finally:
        plaintext.close()
        untrusting.close()
    with pytest.raises(errors.StoreError, match="grpcs://"):
        SessionStoreProvider(f"grpc://127.0.0.1:{port}", root_cert=pki.ca)


def test_mutual_tls_requires_a_client_certificate(pki: Pki) -> None:
    tls = ServerTls.load(pki.server_cert, pki.server_key, client_ca=pki.ca)
    with served(LocalProvider(), tls=tls) as server:
        anonymous = SessionStoreProvider(server.address, root_cert=pki.ca, timeout=3)
        known = SessionStoreProvider(
            server.address,
            root_cert=pki.ca,
            client_cert=pki.client_cert,
            client_key=pki.client_key,
            timeout=WAIT,
        )
        try:
            with pytest.raises(errors.StoreUnavailableError):
                anonymous.create_session()
            assert known.get_session(known.create_session()).revision == 0
        finally:
            anonymous.close()
            known.close()


def test_session_reaches_a_tls_store_with_the_ca_from_the_environment(
    tls_server: StoreServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPEX_TLS_CA", str(pki.ca))
    with dspex.Session(store=tls_server.address) as session:
        session.register("t", float, 0.5)
        assert session.get("t") == 0.5


def test_dspex_serve_with_tls_flags(pki: Pki) -> None:
    process = subprocess.Popen(
        [
            DSPEX, "serve", "--address", "127.0.0.1:0",
            "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("dspex session store listening on grpcs://127.0.0.1:"), line
        address = line.split()[-1]
        result = subprocess.run(
            [DSPEX, "sessions", "create", "--store", address, "--tls-ca", str(pki.ca)],
            capture_output=True,
            text=True,
            timeout=WAIT * 6,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.strip()) == 32
    finally:
        process.terminate()
        process.wait(WAIT * 3)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize(
    "flags",
    [("--tls-cert", "{cert}"), ("--tls-cert", "{cert}", "--tls-key", "{missing}")],
)
def test_dspex_serve_refuses_incomplete_tls_flags(
    pki: Pki, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    paths = {"cert": pki.server_cert, "missing": tmp_path / "nope.pem"}
    result = subprocess.run(
        [DSPEX, "serve", "--address", "127.0.0.1:0", *(f.format(**paths) for f in flags)],
        capture_output=True,
        text=True,
        timeout=WAIT * 6,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("dspex: error:") and "tls" in result.stderr.lower()
