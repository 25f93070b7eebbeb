"""Helpers for the hardening tests: real servers with access control or TLS, certificates made
at test time, auth files, and targets that run in spawned processes (importable by name)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspex._model import make_spec
from dspex.state import LocalProvider, SessionContext
from dspex.state.store import AccessPolicy, ServerTls, StoreLimits, StoreServer

WAIT = 10.0
"""Upper bound for anything that should happen "soon" (generous: the machine may be loaded)."""

FLOAT = make_spec(float, min=0.0, max=2.0)

TOKENS = {"owner": "tok-owner", "worker": "tok-worker", "watcher": "tok-watcher", "eve": "tok-eve"}
"""Principal -> bearer token of the standard auth file."""


def standard_auth() -> dict[str, Any]:
    """An auth file: ``owner`` may do anything in its own sessions; ``worker`` may read every
    session; ``watcher`` may observe only ``a`` (and read it); ``eve`` may create sessions
    (its own) and nothing else."""
    return {
        "principals": {name: {"token": token} for name, token in TOKENS.items()},
        "rules": [
            {
                "principal": "owner",
                "sessions": "@own",
                "variables": "*",
                "allow": ["read", "write", "observe", "optimize"],
            },
            {"principal": "worker", "sessions": "*", "variables": "*", "allow": ["read"]},
            {"principal": "watcher", "sessions": "*", "variables": "a", "allow": ["observe"]},
            {"principal": "eve", "sessions": "@own", "variables": "*", "allow": ["read"]},
        ],
    }


def write_auth_file(directory: Path, data: dict[str, Any] | None = None) -> Path:
    """Write an auth file (the standard one by default) and return its path."""
    path = directory / "auth.json"
    path.write_text(json.dumps(data if data is not None else standard_auth()))
    return path


@contextmanager
def served(
    local: LocalProvider | None = None,
    *,
    auth: AccessPolicy | None = None,
    tls: ServerTls | None = None,
    address: str = "127.0.0.1:0",
    **limits: Any,
) -> Iterator[StoreServer]:
    """A real store server (background thread); stopped afterwards."""
    server = StoreServer.start(
        local if local is not None else LocalProvider(),
        address,
        auth=auth,
        tls=tls,
        limits=StoreLimits(**limits),
    )
    try:
        yield server
    finally:
        server.stop(grace=0.2)


# -- TLS certificates made at test time ---------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_pki(directory: Path) -> Pki:
    """Generate the test certificates (EC P-256, valid for a day) into ``directory``."""
    ca_key, ca_cert = _certificate("dspex test CA", None, ca=True)
    server_key, server_cert = _certificate("127.0.0.1", (ca_key, ca_cert), server=True)
    client_key, client_cert = _certificate("worker", (ca_key, ca_cert))
    _, other_ca = _certificate("someone else's CA", None, ca=True)
    files = {
        "ca": _pem(ca_cert),
        "server_cert": _pem(server_cert),
        "server_key": _key_pem(server_key),
        "client_cert": _pem(client_cert),
        "client_key": _key_pem(client_key),
        "other_ca": _pem(other_ca),
    }
    paths = {}
    for name, data in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = path
    return Pki(**paths)


def _certificate(
    common_name: str, issuer: tuple[Any, Any] | None, *, ca: bool = False, server: bool = False
) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_key, issuer_cert = issuer if issuer is not None else (key, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    return key, builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# -- spawned processes --------------------------------------------------------------------


@contextmanager
def spawned(target: Callable[..., None], *args: Any) -> Iterator[tuple[Any, Any]]:
    """Run ``target(conn, *args)`` in a spawned process; yield (process, parent end of a pipe).

    The process is SIGKILLed afterwards if it is still running.
    """
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(child, *args), daemon=True)
    process.start()
    try:
        yield process, parent
    finally:
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join(WAIT)


def child_hold_lock(conn: Any, address: str, session_id: str, name: str, lease: float) -> None:
    """Take the optimization lock on ``name`` through SessionContext.connect, write under it,
    report ready, then wait to be killed (the lock is never released by this process)."""
    context = SessionContext.connect(address, session_id)
    lock = context.optimizing(name, optimizer_id="doomed", lease=lease)
    lock.__enter__()
    context.set(name, 1.5)
    conn.send("locked")
    time.sleep(600)


def child_create_ttl_session(conn: Any, address: str, ttl: float) -> None:
    """Create a session with a TTL through dspex.Session (which heartbeats), register a
    variable, report the id, then wait to be killed (heartbeats stop with the process)."""
    import dspex

    session = dspex.Session(store=address, ttl=ttl)
    session.register("t", float, 0.5)
    conn.send(session.session_id)
    time.sleep(600)
