"""Layer 2 (gRPC): registering a service's RPCs on an aio server from a method table.

Used instead of the generated ``add_..._to_server`` so request bytes are parsed by our own
functions, which report malformed messages as INVALID_ARGUMENT rather than gRPC's bare UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import grpc

__all__ = ["register_service"]

MethodRow = tuple[str, bool, Callable[[bytes], Any], Callable[[Any], bytes]]
"""(RPC name, server-streaming?, request parser, response serializer)."""


def register_service(
    server: Any, service_name: str, servicer: Any, methods: Iterable[MethodRow]
) -> None:
    """Add every RPC in ``methods``, handled by the servicer method of the same name."""
    handlers = {}
    for name, streaming, parse, serialize in methods:
        make = (
            grpc.unary_stream_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[name] = make(
            getattr(servicer, name), request_deserializer=parse, response_serializer=serialize
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service_name, handlers),)
    )
    server.add_registered_method_handlers(service_name, handlers)
