"""The global ``TracerProvider`` that ``dspex serve`` and workers install from the environment.

Imported only by :func:`dspex._tracing.configure_from_env` when ``OTEL_TRACES_EXPORTER`` asks
for tracing (needs the ``dspex[otel]`` extra: ``opentelemetry-sdk``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import dspex.errors as errors

__all__ = ["JSONL_ENV", "JsonLinesExporter", "install", "span_record"]

JSONL_ENV: Final = "DSPEX_OTEL_JSONL"
"""The file the ``jsonl`` exporter appends finished spans to."""


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain JSON: ids in hex, its parent, kind, attributes and status."""
    context = span.context
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "kind": span.kind.name,
        "attributes": {key: _plain(value) for key, value in (span.attributes or {}).items()},
        "status": span.status.status_code.name,
        "service": span.resource.attributes.get("service.name"),
        "pid": os.getpid(),
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class JsonLinesExporter(SpanExporter):  # type: ignore[misc]
    """Appends each finished span as one JSON line to ``path`` (one ``write`` per line, so
    several processes may share the file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(json.dumps(span_record(span)) + "\n" for span in spans)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, text.encode())
        finally:
            os.close(descriptor)
        return SpanExportResult.SUCCESS


def _otlp_exporter() -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise errors.DspexError(
                "OTEL_TRACES_EXPORTER=otlp needs an OTLP exporter: pip install "
                f"opentelemetry-exporter-otlp ({exc})"
            ) from exc
    exporter: SpanExporter = OTLPSpanExporter()
    return exporter


def install(choice: str, service_name: str) -> None:
    """Set the global provider exporting to ``choice`` (``otlp``, ``console`` or ``jsonl``).

    Raises:
        DspexError: an unknown exporter, a missing OTLP exporter, or ``jsonl`` without a file.
    """
    if choice == "otlp":
        processor: Any = BatchSpanProcessor(_otlp_exporter())
    elif choice == "console":
        processor = BatchSpanProcessor(ConsoleSpanExporter())
    elif choice == "jsonl":
        path = os.environ.get(JSONL_ENV)
        if not path:
            raise errors.DspexError(
                f"OTEL_TRACES_EXPORTER=jsonl needs {JSONL_ENV}=FILE: where to append the spans"
            )
        processor = SimpleSpanProcessor(JsonLinesExporter(path))
    else:
        raise errors.DspexError(
            f"OTEL_TRACES_EXPORTER={choice!r} is not an exporter dspex installs; use otlp, "
            "console, jsonl or none (or set up a TracerProvider in your own code)"
        )
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
