"""Layer 2, gRPC adapter: the standard error details every failed store call carries.

``grpc-status-details-bin`` holds a ``google.rpc.Status`` (same code and message as the call's
status) with one ``google.rpc.ErrorInfo``: ``reason`` is the stable dspex code, ``domain`` is
``"dspex"`` and ``metadata`` maps each detail to its value as JSON text. Any gRPC library's
status-details helper reads it (Python ``grpc_status.rpc_status.from_call``, Go
``status.FromError``), so no client has to know dspex's own ``dspex-error-*`` trailers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = ["DETAILS_BIN_KEY", "DOMAIN", "status_details"]

DETAILS_BIN_KEY: Final = "grpc-status-details-bin"
DOMAIN: Final = "dspex"
_MAX_VALUE_CHARS: Final = 1024


def _json_text(value: Any) -> str:
    """A detail as JSON text; a value JSON cannot hold becomes a JSON string of its text."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = json.dumps(str(value))
    return text if len(text) <= _MAX_VALUE_CHARS else json.dumps(text[: _MAX_VALUE_CHARS - 8])


def status_details(
    status: grpc.StatusCode, message: str, code: str, details: Mapping[str, Any]
) -> bytes:
    """The serialized ``google.rpc.Status`` for one failed call."""
    info = error_details_pb2.ErrorInfo(
        reason=code,
        domain=DOMAIN,
        metadata={str(key): _json_text(value) for key, value in details.items()},
    )
    packed = status_pb2.Status(code=status.value[0], message=message)
    packed.details.add().Pack(info)
    return bytes(packed.SerializeToString())
