"""The Node.js conformance client (tests/protocol/node/conformance.js) against a real
``dspex serve --token``: written from proto/ alone, it covers sessions, the 9 types, errors with
google.rpc.Status details, CAS, batches, history, watch with resume, batch markers, auth and locks,
and serves a tool that Python then calls through the store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.serve_process import ServeProcess

import dspex
from dspex import errors

NODE_DIR = Path(__file__).parent / "node"
TOKEN = "node-conformance-token"
CHECKS = [
    "auth",
    "session_lifecycle",
    "nine_types",
    "invalid_values",
    "cas_conflict",
    "batches",
    "history_rollback",
    "watch_resume",
    "batch_markers",
    "locks",
    "close_session",
]


class NodeClient:
    """The conformance client as a child process, read line by line."""

    def __init__(self, address: str) -> None:
        node = shutil.which("node")
        assert node is not None, "node is not installed: run `make test-deps`"
        assert (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(), (
            "the Node.js client's packages are missing: run `make test-deps`"
        )
        self.process = subprocess.Popen(
            [node, str(NODE_DIR / "conformance.js"), address.removeprefix("grpc://"), TOKEN],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.checks: list[str] = []
        self.stderr: list[str] = []
        assert self.process.stderr is not None
        stream = self.process.stderr
        threading.Thread(target=lambda: self.stderr.extend(stream), daemon=True).start()

    def read_until(self, key: str) -> Any:
        """Collect checks until the line carrying ``key``; fail with the client's stderr."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            if "check" in message:
                self.checks.append(message["check"])
            elif key in message:
                return message[key]
        self.process.wait(10)
        raise AssertionError(f"node client ended early: {''.join(self.stderr)}")

    def finish(self) -> Any:
        """Tell the client Python is done; return its final report."""
        assert self.process.stdin is not None
        self.process.stdin.write("done\n")
        self.process.stdin.flush()
        report = self.read_until("done")
        assert self.process.wait(30) == 0, "".join(self.stderr)
        return report

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def server() -> Iterator[ServeProcess]:
    with ServeProcess("--token", TOKEN) as process:
        yield process


@pytest.mark.timeout(120)
def test_node_client_speaks_the_whole_protocol(server: ServeProcess) -> None:
    client = NodeClient(server.address)
    try:
        ready = client.read_until("ready")
        with dspex.Session(server.address, session_id=ready["session_id"], token=TOKEN) as py:
            # A tool owned by the Node.js process, called from Python through the store.
            assert py.call_tool("node_add", {"a": 2, "b": 3.5}) == {"sum": 5.5, "runtime": "node"}
            # The store checks the arguments against the tool's schema: Node never sees them.
            with pytest.raises(errors.ToolArgumentsError, match="'a'"):
                py.call_tool("node_add", {"a": "two", "b": 3})
            # Values written by Node read the same in Python.
            assert py.get("j") == {"k": [1, 2]}
            assert py.get("arr").dtype.name == "float32"
        report = client.finish()
    finally:
        client.close()
    assert client.checks == CHECKS
    assert report == {"calls": 1}
