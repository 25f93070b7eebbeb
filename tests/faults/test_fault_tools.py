"""Tool takeover (issue 12, item 2): a principal allowed to write only ``scratch*`` tries to
take over another principal's ``transfer`` tool through a real ``dspex serve --auth-file``,
speaking the ToolStore protocol directly (the generated stubs: what an attacker would use).

Owner ids are bound to the principal that first used them, and serving needs the ``serve``
permission on the tool's name: the takeover, a shadow registration and forged answers are all
refused, and every call still reaches the real owner.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.faults import record_figures
from support.serve_process import ServeProcess

import dspex
from dspex._proto.bridge.v1 import tools_pb2, tools_pb2_grpc

CALLS = 40
TOKENS = {"bank": "tok-bank", "eve": "tok-eve", "mallory": "tok-mallory"}


def _auth_file(directory: Path) -> Path:
    """bank may do everything; eve may read and write ``scratch*`` only; mallory may also
    serve tools named ``scratch*``."""
    everything = ["read", "write", "observe", "optimize", "serve"]
    rules = [
        {"principal": "bank", "sessions": "*", "variables": "*", "allow": everything},
        {"principal": "eve", "sessions": "*", "variables": "scratch*", "allow": ["read", "write"]},
        {
            "principal": "mallory", "sessions": "*", "variables": "scratch*", "tools": "scratch*",
            "allow": ["read", "write", "serve"],
        },
    ]  # fmt: skip
    path = directory / "auth.json"
    principals = {name: {"token": token} for name, token in TOKENS.items()}
    path.write_text(json.dumps({"principals": principals, "rules": rules}))
    return path


def _metadata(principal: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[principal]}"),)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ServeProcess]:
    with ServeProcess("--auth-file", str(_auth_file(tmp_path))) as server:
        yield server


def _denied(call: object) -> str:
    """Run ``call``; it must fail with PERMISSION_DENIED (returns the details)."""
    with pytest.raises(grpc.RpcError) as failure:
        result = call()  # type: ignore[operator]
        if hasattr(result, "__next__"):
            next(result)  # a stream fails on its first message
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED, failure.value
    return str(failure.value.details())


@pytest.mark.parametrize("attacker", ["eve", "mallory"])
def test_another_principal_cannot_take_over_shadow_or_answer_for_a_tool(
    store: ServeProcess, attacker: str
) -> None:
    with dspex.Session(store.address, token=TOKENS["bank"]) as bank:

        @dspex.tool
        def transfer(amount: int) -> dict[str, object]:
            """Move money."""
            return {"amount": amount, "by": "bank"}

        [info] = bank.list_tools()
        channel = grpc.insecure_channel(store.address.removeprefix("grpc://"))
        stub = tools_pb2_grpc.ToolStoreStub(channel)
        meta = _metadata(attacker)
        sid, owner = bank.session_id, info.owner
        try:
            serve = tools_pb2.ServeToolsRequest(session_id=sid, owner_id=owner)
            taken = _denied(lambda: stub.ServeTools(serve, metadata=meta))
            spec = tools_pb2.ToolSpec(name="transfer", description="x", parameters_json="{}")
            for owner_id in (owner, "my-own-owner"):
                register = tools_pb2.RegisterToolRequest(
                    session_id=sid, owner_id=owner_id, spec=spec
                )
                _denied(lambda r=register: stub.RegisterTool(r, metadata=meta))
            forged = tools_pb2.ReturnToolResultRequest(
                session_id=sid, owner_id=owner, call_id="0" * 24, result_json='{"by": "eve"}'
            )
            _denied(lambda: stub.ReturnToolResult(forged, metadata=meta))
            unregister = tools_pb2.UnregisterToolsRequest(session_id=sid, owner_id=owner)
            _denied(lambda: stub.UnregisterTools(unregister, metadata=meta))
            results = [bank.call_tool("transfer", {"amount": i}) for i in range(CALLS)]
        finally:
            channel.close()
    assert "may not serve" in taken or "belongs to another principal" in taken
    assert results == [{"amount": i, "by": "bank"} for i in range(CALLS)]
    record_figures(f"tool_takeover_by_{attacker}", calls=CALLS, forged=0, takeovers_refused=1)


def test_serving_needs_the_serve_permission_on_the_tool_name(store: ServeProcess) -> None:
    channel = grpc.insecure_channel(store.address.removeprefix("grpc://"))
    stub = tools_pb2_grpc.ToolStoreStub(channel)
    with dspex.Session(store.address, token=TOKENS["bank"]) as bank:
        try:
            ok = tools_pb2.ToolSpec(name="scratch_sum", description="x", parameters_json="{}")
            request = tools_pb2.RegisterToolRequest(
                session_id=bank.session_id, owner_id="mallory-1", spec=ok
            )
            stub.RegisterTool(request, metadata=_metadata("mallory"))  # allowed: scratch*
            # The owner id is now mallory's: bank cannot serve or answer for it either.
            serve = tools_pb2.ServeToolsRequest(session_id=bank.session_id, owner_id="mallory-1")
            details = _denied(lambda: stub.ServeTools(serve, metadata=_metadata("bank")))
            assert "belongs to another principal" in details
        finally:
            channel.close()
