"""``dspex serve --metrics-port N``: Prometheus metrics beside the store; traces from the env.

The metrics (``dspex[metrics]``: prometheus_client) are served at ``http://HOST:N/metrics``
from the server's own registry (see :mod:`dspex.state.server.metrics`); their port is taken
before the store listens, so a busy port fails the command with nothing started. Traces
(``dspex[otel]``) are turned on the standard OpenTelemetry way, by the ``OTEL_*`` environment
(see :func:`dspex._tracing.configure_from_env`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import dspex.errors as errors
from dspex.cli._types import port_number

if TYPE_CHECKING:
    from dspex.state.server.metrics import MetricsEndpoint, ServerMetrics

__all__ = ["add_serve_options", "open_metrics"]

_EXTRA_HINT = "--metrics-port needs the optional extra: pip install 'dspex[metrics]'"


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--metrics-port`` and ``--metrics-host`` to ``dspex serve``."""
    group = parser.add_argument_group(
        "metrics and traces (need dspex[metrics]; traces: dspex[otel] and OTEL_TRACES_EXPORTER)"
    )
    group.add_argument(
        "--metrics-port",
        type=port_number,
        default=None,
        metavar="N",
        help="serve Prometheus metrics at http://HOST:N/metrics (0 = any free port)",
    )
    group.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics endpoint listens on (%(default)s)",
    )


def open_metrics(args: argparse.Namespace) -> tuple[ServerMetrics, MetricsEndpoint] | None:
    """The metrics and their endpoint the flags ask for (listening already), or None.

    Raises:
        DspexError: the ``dspex[metrics]`` extra is not installed.
        StoreError: the port cannot be used.
    """
    if args.metrics_port is None:
        return None
    module: Any
    try:
        import dspex.state.server.metrics as module
    except ImportError as exc:
        raise errors.DspexError(f"{_EXTRA_HINT} ({exc})") from exc
    metrics = module.ServerMetrics()
    return metrics, module.MetricsEndpoint(metrics, args.metrics_host, args.metrics_port)
