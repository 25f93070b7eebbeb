"""``dspex serve --dashboard-port`` and ``dspex dashboard`` as real processes: what they print,
what they serve, how they stop, and the one-line errors for a store they cannot use."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from support.dashboard import DashboardProcess, first_line, http
from support.redis_server import free_port
from support.serve_process import DSPEX, ServeProcess, run_dspex

import dspex
from dspex.state.store import SessionStoreProvider

pytestmark = pytest.mark.timeout(120)


def first_events(url: str, count: int) -> list[dict[str, object]]:
    """The first ``count`` events of an event stream, decoded."""
    events: list[dict[str, object]] = []
    with urllib.request.urlopen(url, timeout=10) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
                if len(events) == count:
                    break
    return events


def test_serve_with_a_dashboard_port_serves_the_page_beside_the_store() -> None:
    process = subprocess.Popen(
        [DSPEX, "serve", "--address", "127.0.0.1:0", "--token", "s3cret", "--dashboard-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = first_line(process, 30).split()[-1]
        page = first_line(process, 30)
        assert page.startswith("dspex dashboard on http://127.0.0.1:"), page
        url = page.split()[-1]
        with dspex.Session(store=address, token="s3cret") as session:
            session.register("temperature", float, 0.7)
            status, listed = http(f"{url}api/sessions")
            assert status == 200
            assert [s["session_id"] for s in listed] == [session.session_id]
            with urllib.request.urlopen(url, timeout=10) as answer:
                html = answer.read().decode()
                assert "default-src 'self'" in answer.headers["Content-Security-Policy"]
            assert 'src="static/plotly.min.js"' in html and "//" not in html.split("<body>")[0]
            events = first_events(f"{url}api/sessions/{session.session_id}/events", 2)
            assert events[0]["type"] == "variable" and events[1]["type"] == "history"
            status, refused = http(f"{url}api/sessions/no-such-session/events")
            assert status == 404 and "no-such-session" in refused["error"]
        store = SessionStoreProvider(address, token="s3cret")
        kept = store.create_session()  # stays open until the server stops
        store.close()
        open_stream = urllib.request.urlopen(  # a page still watching when the server stops
            f"{url}api/sessions/{kept}/events", timeout=10
        )
        with open_stream:
            assert open_stream.readline().startswith(b"retry:")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            stopped_in = time.monotonic() - started
            assert b"event: end" in open_stream.read()  # the page is told, not cut off
        _, errors = process.communicate()
        assert "Traceback" not in errors and "ERROR" not in errors, errors
        assert stopped_in < 3.0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_dashboard_refuses_a_store_it_cannot_use_in_one_line() -> None:
    nowhere = run_dspex(
        "dashboard", "--store", f"grpc://127.0.0.1:{free_port()}", "--timeout", "2"
    )
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith("dspex: error:") and nowhere.stderr.count("\n") == 1
    with ServeProcess("--token", "right") as store:
        wrong = run_dspex("dashboard", "--store", store.address, "--token", "wrong")
        assert wrong.returncode == 1 and "token" in wrong.stderr.lower(), wrong.stderr
        with DashboardProcess(store.address, "--token", "right") as first:
            port = first.url.rsplit(":", 1)[1].strip("/")
            taken = run_dspex("dashboard", "--store", store.address, "--token", "right",
                              "--port", port)  # fmt: skip
            assert taken.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
            assert first.stop() == 0
        with DashboardProcess(store.address, "--token", "right", "--json") as as_json:
            assert as_json.url.startswith("http://127.0.0.1:")  # read from {"url": ...}


def test_serve_refuses_a_dashboard_with_tls_before_listening() -> None:
    result = run_dspex(
        "serve", "--address", "127.0.0.1:0", "--dashboard-port", "0",
        "--tls-cert", "cert.pem", "--tls-key", "key.pem",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("dspex: error: --dashboard-port cannot be combined")
    assert "listening" not in result.stdout


def test_import_dspex_and_the_cli_parser_stay_free_of_the_web_stack() -> None:
    script = (
        "import sys, dspex, dspex.cli; dspex.cli.build_parser(); "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'uvicorn', 'plotly', 'dspex') and "
        "(m.split('.')[0] != 'dspex' or m.startswith('dspex.dashboard'))])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"


def test_a_stopping_dashboard_ends_open_pages_streams_at_once() -> None:
    with ServeProcess() as store:
        client = SessionStoreProvider(store.address)
        session_id = client.create_session()
        client.close()
        with DashboardProcess(store.address) as dashboard:
            assert dashboard.process is not None
            with urllib.request.urlopen(
                f"{dashboard.url}api/sessions/{session_id}/events", timeout=10
            ) as stream:
                assert stream.readline().startswith(b"retry:")
                started = time.monotonic()
                dashboard.process.terminate()
                assert dashboard.process.wait(30) == 0
                assert stream.read().endswith(b'event: end\ndata: {"type": "end"}\n\n')
            assert time.monotonic() - started < 1.0  # not cut off after a grace period
            assert dashboard.process.stderr is not None
            assert dashboard.process.stderr.read() == ""


def test_serve_stops_with_exit_code_1_when_its_dashboard_cannot_start() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_dspex("serve", "--address", "127.0.0.1:0", "--dashboard-port", str(port))
    assert result.returncode == 1
    assert f"dspex: error: dashboard: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "dspex session store stopped" in result.stderr
