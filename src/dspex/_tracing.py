"""OpenTelemetry traces, when the process traces (optional extra ``dspex[otel]``).

dspex traces through the OpenTelemetry API in the standard way: a process that sets a global
``TracerProvider`` (``opentelemetry.trace.set_tracer_provider``) before it opens stores and
sessions gets client and server spans for store RPCs (context carried in gRPC metadata as a W3C
``traceparent``), a span per bound module call and the call context carried to ``dspex.Remote``
workers. A process that does not is untraced and never imports ``opentelemetry`` (this module
only looks at ``sys.modules``), so ``import dspex`` stays light and the extra stays optional.

``dspex serve`` and ``dspex.Remote`` workers, which have no application code to set a provider,
call :func:`configure_from_env`: with ``OTEL_TRACES_EXPORTER`` set they install one exporting to
``otlp`` (needs ``opentelemetry-exporter-otlp``), ``console``, or ``jsonl`` (one JSON line per
finished span, appended to the file ``DSPEX_OTEL_JSONL`` names; what the tests read).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Final

import dspex.errors as errors

__all__ = [
    "carrier",
    "configure_from_env",
    "continued",
    "enabled",
    "note_variables",
    "span",
]

_EXPORTER_ENV: Final = "OTEL_TRACES_EXPORTER"
_TRACER: Final = "dspex"


def enabled() -> bool:
    """True when this process traces: OpenTelemetry is loaded and a real ``TracerProvider``
    was set (the API's default proxy provider records nothing)."""
    if "opentelemetry.trace" not in sys.modules:
        return False
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span around the block (current inside it), or nothing when the process does not
    trace; yields the span or None."""
    if not enabled():
        yield None
        return
    from opentelemetry import trace

    with trace.get_tracer(_TRACER).start_as_current_span(name, attributes=attributes) as current:
        yield current


def note_variables(session_id: str, names: list[str], versions: list[int]) -> None:
    """Record on the current span which variable versions a call used (no-op untraced)."""
    if not enabled():
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    current.set_attribute("dspex.session_id", session_id)
    current.set_attribute("dspex.variable.names", names)
    current.set_attribute("dspex.variable.versions", versions)


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (to send to another process), or None."""
    if not enabled():
        return None
    from opentelemetry import propagate

    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers or None


@contextlib.contextmanager
def continued(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Run the block in the trace context another process sent (see :func:`carrier`)."""
    if not headers or not enabled():
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(dict(headers)))
    try:
        yield
    finally:
        context.detach(token)


def configure_from_env(service_name: str) -> bool:
    """Install a global ``TracerProvider`` from ``OTEL_TRACES_EXPORTER`` (``otlp``,
    ``console`` or ``jsonl``), unless the process already traces or the variable is unset or
    ``none``; returns whether the process traces afterwards.

    The standard ``OTEL_*`` variables apply (``OTEL_SERVICE_NAME`` overrides
    ``service_name``; ``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends configure ``otlp``).

    Raises:
        DspexError: the variable names an exporter that is unknown or not installed.
    """
    choice = os.environ.get(_EXPORTER_ENV, "").strip().lower()
    if enabled() or choice in ("", "none"):
        return enabled()
    try:
        from dspex._tracing_setup import install
    except ImportError as exc:
        raise errors.DspexError(
            f"{_EXPORTER_ENV}={choice} needs the optional extra: pip install 'dspex[otel]' ({exc})"
        ) from exc
    install(choice, os.environ.get("OTEL_SERVICE_NAME") or service_name)
    return True
