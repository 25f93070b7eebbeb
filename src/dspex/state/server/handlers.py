"""Server side: registering a service's RPCs on an aio server from a tolerant method table.

Used instead of the generated ``add_..._to_server`` so request bytes are parsed by our own
functions, which report malformed messages as INVALID_ARGUMENT rather than gRPC's bare UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from dspex.state.server.observe import CallObserver, observed

__all__ = ["Malformed", "register_service", "service_methods"]

MethodRow = tuple[str, bool, Callable[[bytes], Any], Callable[[Any], bytes]]
"""(RPC name, server-streaming?, request parser, response serializer)."""


def register_service(
    server: Any,
    service_name: str,
    servicer: Any,
    methods: Iterable[MethodRow],
    observers: Sequence[CallObserver] = (),
) -> None:
    """Add every RPC in ``methods``, handled by the servicer method of the same name and seen
    by ``observers`` (metrics, traces)."""
    handlers = {}
    for name, streaming, parse, serialize in methods:
        make = (
            grpc.unary_stream_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )
        behavior = observed(
            observers, f"/{service_name}/{name}", getattr(servicer, name), streaming
        )
        handlers[name] = make(behavior, request_deserializer=parse, response_serializer=serialize)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service_name, handlers),)
    )
    server.add_registered_method_handlers(service_name, handlers)


class Malformed:
    """Stands in for a request whose bytes are not a valid message (the servicer refuses it)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(message_class: Any) -> Any:
    parse = message_class.FromString
    type_name = message_class.DESCRIPTOR.name

    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Malformed(f"the bytes are not a {type_name} ({exc})")

    return parse_or_mark


def service_methods(module: Any, service_name: str) -> list[tuple[str, bool, Any, Any]]:
    """``(name, server_streaming, parse, serialize)`` for every RPC of a generated service.

    Parsing never raises: undecodable bytes become :class:`Malformed`, so the servicer can
    answer INVALID_ARGUMENT with its usual error code instead of grpc's bare UNKNOWN.
    """
    service = module.DESCRIPTOR.services_by_name[service_name]
    return [
        (
            method.name,
            method.server_streaming,
            _tolerant(getattr(module, method.input_type.name)),
            getattr(module, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    ]
