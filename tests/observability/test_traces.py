"""OpenTelemetry traces across a real store server and a real ``dspex.Remote`` worker process.

This process traces the standard way (a global SDK ``TracerProvider`` with the SDK's in-memory
exporter) and runs the store server in-process on its own thread, so the server's spans land in
the same exporter. The worker is a spawned process that configures itself from the environment
(``OTEL_TRACES_EXPORTER=jsonl``) and appends its finished spans to a file the test reads. The
parent-child links must form one trace: the test's span -> the Remote call -> the bound call in
the worker (with the variable versions it used) -> the worker's client RPC -> the server's
span.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from support.serve_process import DSPEX, ServeProcess
from trace_targets import Traced

import dspex
from dspex import _tracing
from dspex._tracing_setup import JSONL_ENV
from dspex.state import LocalProvider, SessionContext
from dspex.state.store import SessionStoreProvider, StoreServer

SET = "dspex.bridge.v1.SessionStore/SetVariable"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """This process traces into an in-memory exporter for the test; untraced again after.

    The API lets a process set its provider once; the reset afterwards is what OpenTelemetry's
    own test utilities do (``reset_trace_globals``), so later tests run untraced.
    """
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    try:
        yield memory
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
        assert not _tracing.enabled()


def ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) in hex, as the worker's JSON lines have them."""
    parent = span.parent
    return (
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
        None if parent is None else f"{parent.span_id:016x}",
    )


def one(spans: list[Any], **wanted: Any) -> Any:
    found = [s for s in spans if all(s.get(k) == v for k, v in wanted.items())]
    assert len(found) == 1, (wanted, spans)
    return found[0]


def test_one_trace_crosses_the_worker_and_the_store(
    exporter: InMemorySpanExporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans_file = tmp_path / "worker-spans.jsonl"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jsonl")  # the spawned worker inherits these
    monkeypatch.setenv(JSONL_ENV, str(spans_file))
    provider = LocalProvider()
    server = StoreServer.start(provider, "127.0.0.1:0")
    tracer = trace.get_tracer("test")
    try:
        with (
            dspex.Session(store=server.address) as session,
            dspex.Remote(Traced(), workers=1) as remote,
        ):
            with tracer.start_as_current_span("request") as root:
                session.set("temperature", 0.3)  # version 2: what the bound call must use
                prediction = remote(question="What is DSPy?")
            assert prediction.pid != os.getpid()
            remote.map([{"question": "one"}, {"question": "two"}], progress=False)
    finally:
        server.stop()
        provider.close()

    here = exporter.get_finished_spans()
    worker = [json.loads(line) for line in spans_file.read_text().splitlines()]
    trace_id, root_id, _ = ids(root)  # type: ignore[arg-type]
    # in this process: the test's set is a client span, its server span a child of it
    client_set = next(s for s in here if s.name == SET and ids(s)[2] == root_id)
    assert client_set.kind is trace.SpanKind.CLIENT
    assert (
        client_set.attributes is not None and client_set.attributes["rpc.method"] == "SetVariable"
    )
    server_set = next(
        s for s in here if s.kind is trace.SpanKind.SERVER and ids(s)[2] == ids(client_set)[1]
    )
    assert ids(server_set)[0] == trace_id and server_set.name == SET
    # the Remote call is a span here; in the worker, the bound call continues it, with the
    # variable versions it used
    [call] = [s for s in here if s.name == "dspex.remote Traced"]
    assert ids(call)[::2] == (trace_id, root_id)
    bound = one(worker, name="dspex.bind Answer", trace_id=trace_id)
    assert (bound["trace_id"], bound["parent_span_id"]) == (trace_id, ids(call)[1])
    assert bound["pid"] == prediction.pid and bound["service"] == "dspex-worker"
    assert bound["attributes"]["dspex.variable.names"] == ["temperature"]
    assert bound["attributes"]["dspex.variable.versions"] == [2]
    assert bound["attributes"]["dspex.session_id"] == session.session_id
    # its store write is a worker client span under it, and the store's server span under that
    write = one(worker, name=SET, parent_span_id=bound["span_id"])
    assert (write["kind"], write["trace_id"]) == ("CLIENT", trace_id)
    [served] = [
        s for s in here if s.kind is trace.SpanKind.SERVER and ids(s)[2] == write["span_id"]
    ]
    assert ids(served)[0] == trace_id and served.name == SET
    assert served.attributes is not None and served.attributes["rpc.grpc.status_code"] == 0
    # a map is one span here, parent of each of its calls in the worker
    [batch] = [s for s in here if s.name == "dspex.remote Traced.map"]
    mapped = [s for s in worker if s["parent_span_id"] == ids(batch)[1]]
    assert [s["name"] for s in mapped] == ["dspex.bind Answer"] * 2


def test_dspex_serve_traces_from_the_environment(
    exporter: InMemorySpanExporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``dspex serve`` process configured by OTEL_* continues the caller's trace: each of
    its server spans is the child of this process's client span for the same call."""
    spans_file = tmp_path / "server-spans.jsonl"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jsonl")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "store-under-test")
    monkeypatch.setenv(JSONL_ENV, str(spans_file))
    with ServeProcess() as store:
        client = SessionStoreProvider(store.address)
        try:
            with trace.get_tracer("test").start_as_current_span("request"):
                view = SessionContext(client, client.create_session())
                view.register("temperature", float, 0.7)
                with pytest.raises(dspex.errors.VariableNotFoundError):
                    view.get("absent")
        finally:
            client.close()
        assert store.stop() == 0
    clients = {
        ids(s)[1]: s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.CLIENT
    }
    served = [json.loads(line) for line in spans_file.read_text().splitlines()]
    assert len(clients) == 3
    for span in served:
        assert span["kind"] == "SERVER" and span["service"] == "store-under-test"
        caller = clients[span["parent_span_id"]]
        assert (span["name"], span["trace_id"]) == (caller.name, ids(caller)[0])
    assert sorted(s["name"].rpartition("/")[2] for s in served) == [
        "CreateSession",
        "GetVariable",
        "RegisterVariable",
    ]
    failed = one(served, name="dspex.bridge.v1.SessionStore/GetVariable")
    assert failed["status"] == "ERROR" and failed["attributes"]["rpc.grpc.status_code"] == 5


def test_an_unknown_exporter_stops_dspex_serve_with_a_clear_error() -> None:
    result = subprocess.run(
        [DSPEX, "serve", "--address", "127.0.0.1:0"],
        env={**os.environ, "OTEL_TRACES_EXPORTER": "zipkin-please"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "OTEL_TRACES_EXPORTER='zipkin-please' is not an exporter" in result.stderr
    assert "listening" not in result.stdout
