"""Client side of store-RPC traces: a client span per unary call, its context sent along.

Loaded (with ``opentelemetry``) only when the process traces (:func:`dspex._tracing.enabled`
when the channel opens). Each unary call becomes a ``CLIENT`` span named
``dspex.bridge.v1.SessionStore/GetVariable`` (etc.); the current context is injected into the
call's gRPC metadata as W3C ``traceparent`` (and ``tracestate``), where the server's span picks
it up (:mod:`dspex.state.server.tracing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

__all__ = ["TracingClientInterceptor", "rpc_attributes", "traced_channel"]


def rpc_attributes(method: str) -> tuple[str, dict[str, str]]:
    """The span name (``service/method``) and the semantic-convention attributes of an RPC."""
    name = method.lstrip("/")
    service, _, rpc = name.rpartition("/")
    return name, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _Details(_CallDetails, grpc.ClientCallDetails):  # type: ignore[misc]
    """The call's details with the trace context added to its metadata."""


class TracingClientInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Wraps each unary call of a channel in a client span and propagates its context."""

    def __init__(self) -> None:
        self._tracer = trace.get_tracer("dspex.store")

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        name, attributes = rpc_attributes(client_call_details.method)
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            metadata = (*(client_call_details.metadata or ()), *headers.items())
            details = _Details(
                client_call_details.method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
                client_call_details.compression,
            )
            outcome = continuation(details, request)
            code = outcome.code()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            return outcome


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """``channel`` with every unary call traced."""
    return grpc.intercept_channel(channel, TracingClientInterceptor())
