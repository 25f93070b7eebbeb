"""Tools are bound to the connection that serves them (issue 12, item 2), through a real
``dspex serve --token-file``: every connection here is the SAME principal, so only the binding
of an owner id to its first ``ServeTools`` stream (the serving key) stands between them.

A second connection reads the owner id from ``ListTools`` and tries to take the live owner's
stream over, reshape or add to its tools, remove them, and guess its key: all refused, and every
call still reaches the real owner. The owner itself reconnects with its key (also before the
store noticed its old stream's end). Once an owner's stream has ended (its process was killed),
another owner of the same principal may register the tool name again and serve it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import wait_until
from support.serve_process import ServeProcess

import dspex
from dspex._proto.bridge.v1 import tools_pb2, tools_pb2_grpc
from dspex.errors import ToolExistsError

TOKEN = "tok-one-principal"
CALLS = 20
OWNER_SCRIPT = """
import sys, time
import dspex
with dspex.Session(sys.argv[1], session_id=sys.argv[2]) as session:
    @dspex.tool
    def transfer(amount: int) -> dict:
        '''Move money.'''
        return {"amount": amount, "by": "first"}
    print(session.list_tools()[0].owner, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ServeProcess]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with ServeProcess("--token-file", str(token_file)) as server:
        yield server


@pytest.fixture
def stub(store: ServeProcess) -> Iterator[Any]:
    """A ToolStore stub on a connection of its own (a local subchannel pool: no sharing)."""
    channel = grpc.insecure_channel(
        store.address.removeprefix("grpc://"), options=[("grpc.use_local_subchannel_pool", 1)]
    )
    try:
        yield tools_pb2_grpc.ToolStoreStub(channel)
    finally:
        channel.close()


META = (("authorization", f"Bearer {TOKEN}"),)
SPEC = tools_pb2.ToolSpec(name="transfer", description="forged", parameters_json="{}")


def _denied(call: Any) -> str:
    """Run ``call``; it must fail with PERMISSION_DENIED (returns the details)."""
    with pytest.raises(grpc.RpcError) as failure:
        result = call()
        if hasattr(result, "__next__"):
            next(result)  # a stream fails on its first message
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED, failure.value
    return str(failure.value.details())


def _serve(stub: Any, sid: str, owner: str, key: str = "") -> tuple[Any, str]:
    """Open a ServeTools stream; returns it and the serving key of its ``started`` message."""
    stream = stub.ServeTools(
        tools_pb2.ServeToolsRequest(session_id=sid, owner_id=owner, serving_key=key),
        metadata=META,
    )
    first = next(stream)
    assert first.WhichOneof("event") == "started"
    return stream, first.started.serving_key


def test_a_second_connection_cannot_take_over_reshape_or_remove_a_served_tool(
    store: ServeProcess, stub: Any
) -> None:
    with dspex.Session(store.address, token=TOKEN) as owner:

        @dspex.tool
        def transfer(amount: int) -> dict[str, object]:
            """Move money."""
            return {"amount": amount, "by": "owner"}

        [info] = owner.list_tools()
        sid, owner_id = owner.session_id, info.owner

        def serve(key: str) -> Any:
            request = tools_pb2.ServeToolsRequest(
                session_id=sid, owner_id=owner_id, serving_key=key
            )
            return stub.ServeTools(request, metadata=META)

        taken = _denied(lambda: serve(""))
        _denied(lambda: serve("a-guessed-key"))
        for spec in (SPEC, tools_pb2.ToolSpec(name="steal", parameters_json="{}")):
            request = tools_pb2.RegisterToolRequest(session_id=sid, owner_id=owner_id, spec=spec)
            _denied(lambda r=request: stub.RegisterTool(r, metadata=META))
        shadow = tools_pb2.RegisterToolRequest(session_id=sid, owner_id="other-owner", spec=SPEC)
        with pytest.raises(grpc.RpcError) as exists:
            stub.RegisterTool(shadow, metadata=META)
        assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
        remove = tools_pb2.UnregisterToolsRequest(session_id=sid, owner_id=owner_id)
        _denied(lambda: stub.UnregisterTools(remove, metadata=META))

        results = [owner.call_tool("transfer", {"amount": i}) for i in range(CALLS)]
        [after] = owner.list_tools()
    assert "bound to the ServeTools stream that first served it (now live)" in taken
    assert results == [{"amount": i, "by": "owner"} for i in range(CALLS)]
    assert (after.name, after.description, after.owner, after.connected) == (
        "transfer", "Move money.", owner_id, True,
    )  # fmt: skip


def test_the_owner_reconnects_with_its_key_and_no_one_else_serves_its_id(
    store: ServeProcess, stub: Any
) -> None:
    with dspex.Session(store.address, token=TOKEN) as caller:
        sid = caller.session_id
        first, key = _serve(stub, sid, "owner-a")
        register = tools_pb2.RegisterToolRequest(
            session_id=sid, owner_id="owner-a", spec=SPEC, serving_key=key
        )
        stub.RegisterTool(register, metadata=META)
        # The owner's own reconnect, before the store noticed the old stream ended: it gets
        # the same key, and the old stream is ended.
        second, again = _serve(stub, sid, "owner-a", key)
        assert again == key and len(key) >= 32
        assert {message.WhichOneof("event") for message in first} <= {"heartbeat"}
        second.cancel()
        assert wait_until(lambda: not caller.list_tools()[0].connected, timeout=30.0)
        # Ended, the owner id stays bound to its key; the name is free for another owner.
        detail = _denied(lambda: next(stub.ServeTools(
            tools_pb2.ServeToolsRequest(session_id=sid, owner_id="owner-a"), metadata=META
        )))  # fmt: skip
        assert "(now ended)" in detail
        with dspex.Session(store.address, session_id=sid, token=TOKEN) as successor:

            @dspex.tool
            def transfer(amount: int) -> str:
                """Move money."""
                return f"successor moved {amount}"

            assert caller.call_tool("transfer", {"amount": 3}) == "successor moved 3"
            assert successor.list_tools()[0].owner != "owner-a"


def test_a_killed_owners_tool_name_is_taken_over_only_after_its_stream_ended(
    store: ServeProcess,
) -> None:
    with dspex.Session(store.address, token=TOKEN) as successor:
        env = {**os.environ, "DSPEX_TOKEN": TOKEN}
        process = subprocess.Popen(
            [sys.executable, "-c", OWNER_SCRIPT, store.address, successor.session_id],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert process.stdout is not None
            first_owner = process.stdout.readline().strip()
            assert first_owner, "the owner process did not start"
            assert successor.call_tool("transfer", {"amount": 1})["by"] == "first"

            def transfer(amount: int) -> dict[str, object]:
                """Move money."""
                return {"amount": amount, "by": "successor"}

            with pytest.raises(ToolExistsError, match="still connected"):
                dspex.tool(transfer)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
            assert wait_until(lambda: not successor.list_tools()[0].connected, timeout=30.0)
            dspex.tool(transfer)
            assert successor.call_tool("transfer", {"amount": 2}) == {
                "amount": 2,
                "by": "successor",
            }
            [info] = successor.list_tools()
            assert info.owner != first_owner and info.connected
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(30)
