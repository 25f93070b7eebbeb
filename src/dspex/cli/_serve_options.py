"""``dspex serve`` options for production hardening: access control, TLS, expiry and limits.

Kept beside :mod:`dspex.cli._serve` so the serve command itself stays about running the server.
Every limit gives a clear error at the limit (``LimitExceededError``, RESOURCE_EXHAUSTED on
the wire); see ``docs/security.md``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import dspex.errors as errors
from dspex.cli._vars import TOKEN_ENV

__all__ = ["add_hardening_options", "provider_limits", "server_security"]


def add_hardening_options(parser: argparse.ArgumentParser) -> None:
    """Add the access-control, TLS, session-expiry and limit flags to ``serve``."""
    security = parser.add_argument_group("access control and TLS (see docs/security.md)")
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
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="expire sessions created without a TTL after this long without a heartbeat "
        "(clients heartbeat automatically; default: never)",
    )
    for flag, what in (
        ("--max-sessions", "open sessions in the store"),
        ("--max-variables", "variables per session"),
        ("--max-watchers", "watch streams per session"),
    ):
        limits.add_argument(flag, type=_positive_int, default=None, metavar="N", help=what)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


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

    if args.auth_file is not None and args.token:
        raise errors.StoreError(
            "give either --token (one token, allowed everything) or --auth-file, not both"
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
