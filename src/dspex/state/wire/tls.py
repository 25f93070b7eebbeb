"""Wire: TLS material for the store server and its clients.

Certificates and keys are PEM, given as file paths or PEM bytes. The server takes a certificate
chain and key, and optionally a client CA (then every client must present a certificate it
signed: mutual TLS). A client reaches a TLS server with a ``grpcs://`` address and trusts the
given root certificate (or the system roots, or ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from dspex.errors import StoreError

__all__ = ["ClientTls", "PemSource", "ServerTls", "read_pem"]

PemSource = str | bytes | Path
"""PEM bytes, or the path of a PEM file."""

_ENV_ROOT, _ENV_CERT, _ENV_KEY = "DSPEX_TLS_CA", "DSPEX_TLS_CERT", "DSPEX_TLS_KEY"


def read_pem(source: PemSource, what: str) -> bytes:
    """The PEM bytes of ``source`` (bytes as they are, a str/Path read as a file).

    Raises:
        StoreError: the file cannot be read or does not hold PEM data.
    """
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read the TLS {what} from {str(source)!r}: {exc}") from exc
    if b"-----BEGIN " not in data:
        raise StoreError(f"the TLS {what} is not PEM data (expected '-----BEGIN ...')")
    return data


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's certificate chain and key; with ``client_ca``, client certificates are
    required and must be signed by it."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None

    @classmethod
    def load(
        cls, cert: PemSource, key: PemSource, client_ca: PemSource | None = None
    ) -> ServerTls:
        """Read the PEM material (paths or bytes).

        Raises:
            StoreError: a file cannot be read or is not PEM.
        """
        return cls(
            read_pem(cert, "certificate"),
            read_pem(key, "private key"),
            None if client_ca is None else read_pem(client_ca, "client CA"),
        )

    def credentials(self) -> Any:
        """grpc server credentials for ``add_secure_port``."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What a client trusts and, for mutual TLS, the certificate it presents."""

    root_cert: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None

    @classmethod
    def load(
        cls,
        root_cert: PemSource | None = None,
        client_cert: PemSource | None = None,
        client_key: PemSource | None = None,
    ) -> ClientTls:
        """Read the PEM material; each missing one comes from ``DSPEX_TLS_CA`` /
        ``DSPEX_TLS_CERT`` / ``DSPEX_TLS_KEY`` when set (paths).

        Raises:
            StoreError: a file cannot be read, is not PEM, or only one of cert/key is given.
        """
        root_cert = root_cert if root_cert is not None else os.environ.get(_ENV_ROOT) or None
        client_cert = client_cert if client_cert is not None else os.environ.get(_ENV_CERT)
        client_key = client_key if client_key is not None else os.environ.get(_ENV_KEY)
        if bool(client_cert) != bool(client_key):
            raise StoreError("a TLS client certificate needs its private key, and vice versa")
        return cls(
            None if root_cert is None else read_pem(root_cert, "root certificate"),
            read_pem(client_cert, "client certificate") if client_cert else None,
            read_pem(client_key, "client private key") if client_key else None,
        )

    def credentials(self) -> Any:
        """grpc channel credentials for ``secure_channel``."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_cert,
            private_key=self.client_key,
            certificate_chain=self.client_cert,
        )
