"""``dspex serve`` options for production hardening: access control, TLS, expiry and limits.

Kept beside :mod:`dspex.cli._serve` so the serve command itself stays about running the server.
Every limit gives a clear error at the limit (``LimitExceededError``, RESOURCE_EXHAUSTED on
the wire); see ``docs/security.md``. Every numeric flag is range-checked when it is parsed, so
an out-of-range value stops ``dspex serve`` before anything is opened or listens. The token
comes from ``--token-file`` or ``$DSPEX_TOKEN`` (``--token`` still works but is visible in the
process list), and a plaintext server without auth on a non-loopback address needs
``--insecure``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any, Final

import dspex.errors as errors
from dspex.cli._types import int_at_least, positive_seconds
from dspex.cli._vars import TOKEN_ENV

__all__ = [
    "MIN_HEARTBEAT",
    "add_hardening_options",
    "check_address",
    "check_exposure",
    "check_sizes",
    "provider_limits",
    "server_security",
]

MIN_HEARTBEAT: Final = 0.1
"""Shortest ``--heartbeat``: shorter ones make idle watch streams busy-loop."""


def add_hardening_options(parser: argparse.ArgumentParser) -> None:
    """Add the access-control, TLS, session-expiry and limit flags to ``serve``."""
    security = parser.add_argument_group("access control and TLS (see docs/security.md)")
    security.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"require the bearer token held in this file, allowed everything (or set "
        f"${TOKEN_ENV}; not with --auth-file)",
    )
    security.add_argument(
        "--token",
        default=None,
        help=f"like --token-file, but visible to every local user in the process list: prefer "
        f"--token-file or ${TOKEN_ENV}",
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        help="allow serving without TLS and without a token or auth file on an address other "
        "than loopback (anyone who can reach it may read and write everything)",
    )
    security.add_argument(
        "--auth-file",
        metavar="PATH",
        help="JSON file mapping bearer tokens to principals, with read/write/observe/optimize "
        "rules per session and variable; everything else is denied (not with --token)",
    )
    security.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate")
    security.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    security.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    limits = parser.add_argument_group("session expiry and limits")
    limits.add_argument(
        "--session-ttl",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="expire sessions created without a TTL after this long without a heartbeat "
        "(clients heartbeat automatically; default: never)",
    )
    limits.add_argument(
        "--max-concurrent-calls",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="calls and streams in progress at once (watch, lock and tool streams count); "
        "above it calls are refused as overload (RESOURCE_EXHAUSTED) instead of piling up "
        "(default: %(default)s)",
    )
    for flag, what in (
        ("--max-sessions", "open sessions in the store"),
        ("--max-variables", "variables per session"),
        ("--max-watchers", "watch streams per session"),
    ):
        limits.add_argument(flag, type=_positive_int, default=None, metavar="N", help=what)


_positive_int = int_at_least(1)


def check_sizes(args: argparse.Namespace) -> None:
    """Cross-flag ranges that one flag's type cannot check alone.

    Raises:
        StoreError: ``--max-value-bytes`` is larger than ``--max-request-bytes``.
    """
    if args.max_value_bytes > args.max_message_bytes:
        raise errors.StoreError(
            f"--max-value-bytes {args.max_value_bytes} is larger than --max-request-bytes "
            f"{args.max_message_bytes}: no request could carry such a value; lower it or raise "
            "--max-request-bytes"
        )


def check_address(args: argparse.Namespace) -> None:
    """Refuse an ``--address`` no server can listen on before anything is opened (a bare port
    or host, another scheme, a port past 65535), or ``grpcs://`` without a certificate.

    Raises:
        StoreError: naming the address and the forms that work.
    """
    from dspex.state.wire.channel import parse_address

    address = args.address
    if address.startswith("grpcs://") and args.tls_cert is None:
        raise errors.StoreError(
            f"--address {address}: a grpcs:// server needs --tls-cert and --tls-key (its "
            "certificate and key); give them, or serve plaintext on HOST:PORT"
        )
    try:
        parse_address(address)
    except errors.StoreError:
        raise errors.StoreError(
            f"--address {address!r} is not an address to listen on; use HOST:PORT (e.g. "
            "127.0.0.1:50051; port 0 = any free port), grpc://HOST:PORT or unix:PATH"
        ) from None


def check_exposure(args: argparse.Namespace, security: dict[str, Any]) -> None:
    """Refuse (without ``--insecure``) a plaintext server without a token or auth file on an
    address other than loopback, and warn when tokens would cross the network in the clear.

    Raises:
        StoreError: exposed without TLS and without auth, and ``--insecure`` was not given.
    """
    if security["tls"] is not None or is_loopback(args.address):
        return
    if security["auth"] is None and not args.token:
        if not args.insecure:
            raise errors.StoreError(
                f"refusing to serve {args.address} without TLS and without a token: anyone who "
                "can reach it could read and write every session; add --token-file or "
                "--auth-file and --tls-cert/--tls-key, listen on 127.0.0.1, or pass --insecure"
            )
        _warn(
            f"serving {args.address} without TLS or a token (--insecure): anyone who can "
            "reach it may read and write every session"
        )
        return
    _warn(
        f"serving {args.address} without TLS: bearer tokens and values cross the network in "
        "the clear; add --tls-cert/--tls-key"
    )


def is_loopback(address: str) -> bool:
    """Whether ``dspex serve --address`` listens on loopback or a unix socket only."""
    text = address.removeprefix("grpc://")
    if text.startswith("unix:"):
        return True
    host = text.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name (or 0.0.0.0-like wildcard) may be reachable from outside


def _warn(message: str) -> None:
    print(f"dspex serve: warning: {message}", file=sys.stderr, flush=True)


def provider_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The LocalProvider limit options the flags set."""
    return {
        "max_sessions": args.max_sessions,
        "max_variables": args.max_variables,
        "max_value_bytes": args.max_value_bytes,
        "max_watchers": args.max_watchers,
    }


def server_security(args: argparse.Namespace) -> dict[str, Any]:
    """``auth`` and ``tls`` for :func:`dspex.state.store.serve`, read from the flags' files
    (and ``args.token`` from ``$DSPEX_TOKEN`` when neither --token nor --auth-file is given).

    Raises:
        ConstraintError: the auth file is missing or not in the documented shape.
        StoreError: both --token and --auth-file, TLS flags incomplete, or a PEM file that
            cannot be read.
    """
    from dspex.state.store import AccessPolicy, ServerTls

    args.token = _token(args)
    if args.auth_file is not None and args.token:
        raise errors.StoreError(
            "give either --token-file (one token, allowed everything) or --auth-file, not both"
        )
    if args.token and args.token_file is None:
        _warn(
            f"--token is visible to every local user in the process list; use "
            f"--token-file PATH or ${TOKEN_ENV} instead"
        )
    if args.auth_file is None and args.token is None:
        args.token = os.environ.get(TOKEN_ENV) or None  # with an auth file the env is ignored
    auth = None if args.auth_file is None else AccessPolicy.from_file(args.auth_file)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise errors.StoreError("--tls-cert and --tls-key go together: give both, or neither")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise errors.StoreError("--tls-client-ca needs --tls-cert and --tls-key")
    tls = None
    if args.tls_cert is not None:
        tls = ServerTls.load(args.tls_cert, args.tls_key, args.tls_client_ca)
    return {"auth": auth, "tls": tls}


def _token(args: argparse.Namespace) -> str | None:
    """The token of ``--token-file`` or ``--token``.

    Raises:
        StoreError: both flags, or a token file that cannot be read or is empty.
    """
    if args.token_file is None:
        return str(args.token) if args.token is not None else None
    if args.token is not None:
        raise errors.StoreError("give either --token-file or --token, not both")
    try:
        with open(args.token_file, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.StoreError(
            f"cannot read the token file {args.token_file}: {exc}; give a readable text file "
            "holding the token"
        ) from exc
    if not token or any(c.isspace() for c in token):
        raise errors.StoreError(
            f"the token file {args.token_file} must hold one token (no spaces), got "
            f"{'nothing' if not token else 'whitespace inside'}"
        )
    return token
