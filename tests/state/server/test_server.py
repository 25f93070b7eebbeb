"""The store server process: health, reflection, graceful shutdown on signals, bad addresses."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.bridge import FLOAT, WAIT, served

import dspex.errors as errors
from dspex._model import make_spec
from dspex._proto.bridge.v1 import store_pb2 as pb
from dspex.state import LocalProvider
from dspex.state.server.convert import record_response
from dspex.state.store import SERVICE_NAME, SessionStoreProvider, StoreServer

DSPEX = str(Path(sys.executable).parent / "dspex")
"""The installed ``dspex`` console script of this environment."""


def test_health_reports_serving(server: StoreServer) -> None:
    channel = grpc.insecure_channel(server.address.removeprefix("grpc://"))
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()


def test_reflection_lists_the_store_service(server: StoreServer) -> None:
    channel = grpc.insecure_channel(server.address.removeprefix("grpc://"))
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(stub.ServerReflectionInfo(iter([request]), timeout=WAIT))
        names = {service.name for service in reply.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    finally:
        channel.close()


def test_an_address_in_use_is_refused(server: StoreServer) -> None:
    with (
        pytest.raises(errors.StoreError, match="cannot listen"),
        served(None, server.address.removeprefix("grpc://")),
    ):
        pass


@contextmanager
def _serve_process(*extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [DSPEX, "serve", "--address", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("dspex session store listening on grpc://127.0.0.1:"), line
        yield process, line.split()[-1]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(WAIT)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_shuts_down_gracefully_on_signals(sig: signal.Signals) -> None:
    with _serve_process("--grace", "1") as (process, address):
        client = SessionStoreProvider(address)
        session_id = client.create_session()
        client.register_variable(session_id, "t", FLOAT, 0.5)
        watch = client.watch_variables(session_id)
        client.set_variable(session_id, "t", 0.6)
        assert watch.poll(WAIT) is not None
        process.send_signal(sig)
        assert process.wait(WAIT * 3) == 0
        assert process.stderr is not None and "stopped" in process.stderr.read()
        with pytest.raises(errors.StoreUnavailableError) as caught:
            watch.poll(WAIT)
        assert caught.value.resume_from == 2
        with pytest.raises(errors.StoreUnavailableError):
            client.get_variable(session_id, "t")
        client.close()


def test_serve_passes_limits_and_options_through() -> None:
    with _serve_process("--history-size", "2", "--max-value-bytes", "100") as (_, address):
        client = SessionStoreProvider(address)
        session_id = client.create_session()
        client.register_variable(session_id, "t", FLOAT, 0.5)
        for value in (0.6, 0.7, 0.8):
            client.set_variable(session_id, "t", value)
        assert [r.value for r in client.get_history(session_id, "t")] == [0.7, 0.8]
        client.register_variable(session_id, "text", make_spec(str), "short")
        with pytest.raises(errors.LimitExceededError):
            client.set_variable(session_id, "text", "x" * 200)
        client.close()


def test_a_record_response_is_encoded_once_while_the_record_is_current() -> None:
    local = LocalProvider()
    session_id = local.create_session()
    record = local.register_variable(session_id, "t", FLOAT, 0.7)
    sent = record_response("GetVariable", record)
    assert record_response("GetVariable", record) is sent  # reused, not encoded again
    assert pb.GetVariableResponse.FromString(sent).variable.value.json == "0.7"
    changed = record_response("GetVariable", local.set_variable(session_id, "t", 0.25))
    assert pb.GetVariableResponse.FromString(changed).variable.value.json == "0.25"
    local.close()
