"""Server side of store-RPC traces: a ``SERVER`` span per call, child of the caller's span.

Loaded (with ``opentelemetry``) only when the server process traces. The caller's context
arrives in the call's gRPC metadata (W3C ``traceparent``, see :mod:`dspex.state.wire.tracing`);
the span is current while a unary call runs, so spans the handler makes are its children.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from dspex.state.wire.tracing import rpc_attributes

__all__ = ["TracingObserver"]


class TracingObserver:
    """A :class:`~dspex.state.server.observe.CallObserver` that opens a span per call."""

    def __init__(self) -> None:
        self._tracer = trace.get_tracer("dspex.store")

    def begin(self, method: str, context: Any, streaming: bool) -> Any:
        headers = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        parent = propagate.extract(headers)
        name, attributes = rpc_attributes(method)
        span = self._tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        # Streams span their whole life and are resumed by grpc between messages: only a unary
        # call makes its span current (the ContextVar copy reaches offloaded provider calls).
        token = None if streaming else otel_context.attach(trace.set_span_in_context(span))
        return span, token

    def end(self, token: Any, code: grpc.StatusCode) -> None:
        span, attached = token
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()
        if attached is not None:
            otel_context.detach(attached)
