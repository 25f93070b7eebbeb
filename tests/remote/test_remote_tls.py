"""A promoted session served over TLS (``Session(tls_cert=, tls_key=, tls_ca=)``, issue 13):
spawned Remote workers reach it over ``grpcs://`` with the CA shipped in their setup, read and
see live sets, and call the parent's tools; a process without the CA fails with a TLS error.
Certificates are made at test time (``support.hardening.make_pki``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from remote_targets import ReadsAndCallsTool
from support.hardening import Pki, make_pki

import dspex
from dspex.errors import SessionError, StoreError, StoreUnavailableError
from dspex.state.store import SessionStoreProvider

pytestmark = pytest.mark.slow

PROBE = """
import sys
from dspex.errors import StoreUnavailableError
from dspex.state.store import SessionStoreProvider
address, token, session_id = sys.argv[1:4]
root = sys.argv[4] if len(sys.argv) > 4 else None
store = SessionStoreProvider(address, token=token, root_cert=root, timeout=10)
try:
    print("revision", store.get_session(session_id).revision)
except StoreUnavailableError as exc:
    print("tls" if exc.details.get("tls") else "other", exc)
"""


@pytest.fixture(name="pki", scope="module")
def _pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _probe(session: dspex.Session, *root: str) -> str:
    """Reach the session's store from a fresh process (no $DSPEX_TLS_CA), trusting ``root``."""
    assert session.address is not None and session.store_token is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSPEX_TLS")}
    argv = [session.address, session.store_token, session.session_id, *root]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_spawned_workers_reach_a_tls_promoted_session(pki: Pki) -> None:
    with dspex.Session(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca) as session:
        session.register("temperature", float, 0.5)

        @dspex.tool
        def echo(text: str) -> str:
            """Say it back."""
            return f"echo {text}"

        with dspex.Remote(ReadsAndCallsTool(), workers=2, timeout=60) as pool:
            assert pool.address.startswith("grpcs://127.0.0.1:")
            assert session.store_ca == Path(pki.ca).read_bytes()
            first = pool(name="temperature")
            session.set("temperature", 0.9)
            later = pool.map([{"name": "temperature"}] * 4)
        assert first["value"] == 0.5 and first["tool"] == "echo temperature"
        assert [r["value"] for r in later] == [0.9] * 4
        assert {r["pid"] for r in [first, *later]} - {os.getpid()}, "ran in this process"
        # Another process: with the CA it gets in; without it, the handshake fails as TLS.
        assert _probe(session, str(pki.ca)).startswith("revision ")
        refused = _probe(session)
        assert refused.startswith("tls TLS with session store"), refused
        plaintext = session.address.replace("grpcs://", "grpc://")
        with pytest.raises(StoreUnavailableError):
            SessionStoreProvider(plaintext, token=session.store_token, timeout=5).get_session(
                session.session_id
            )


def test_tls_options_are_checked_before_anything_starts(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="tls_cert and tls_key go together"):
        dspex.Session(tls_cert=pki.server_cert)
    with pytest.raises(SessionError, match="has its own TLS"):
        dspex.Session("grpc://127.0.0.1:9", tls_cert=pki.server_cert, tls_key=pki.server_key)
    missing = tmp_path / "missing.pem"
    with pytest.raises(StoreError, match=r"missing\.pem"):
        dspex.Session(tls_cert=missing, tls_key=pki.server_key)
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    with pytest.raises(StoreError, match="not PEM"):
        dspex.Session(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=not_pem)
