"""Modules, LMs and processes for the tool tests, in an importable module (shipped by reference).

* :class:`ToolCaller` calls a session tool from whichever process runs it (a Remote worker);
  :class:`ToolByName` finds the tool by name there first.
* :class:`ScriptedToolLM` is a deterministic offline LM that drives ``dspy.ReAct``: it picks the
  ``weather`` tool with the city named in the question, then ``finish``, then answers with the
  observation it finds in the trajectory. (``dspex.SimLM`` always picks ``finish`` for ReAct,
  so it cannot exercise a tool call.)
* :func:`run_owner` is the main of a spawned process that joins a session by address and owns
  tools there until it is killed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage
from dspy.utils import DummyLM

import dspex
from dspex.tools import SessionTool


class ToolCaller:
    """Calls ``tool(**arguments)`` and reports the result with this process's id."""

    def __init__(self, tool: SessionTool) -> None:
        self.tool = tool

    def __call__(self, **arguments: Any) -> dict[str, Any]:
        return {"result": self.tool(**arguments), "pid": os.getpid()}


class ToolByName:
    """Looks a tool up by name in the worker's session and calls it."""

    def __call__(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        found = SessionTool.lookup(tool)
        return {"result": found(**arguments), "description": found.description}


class _ScriptedEngine:
    """The engine behind :class:`ScriptedToolLM` (same interface as DSPy's DummyEngine)."""

    def __init__(self, lm: ScriptedToolLM) -> None:
        self.lm = lm

    def complete(self, request: Any) -> Any:
        system = request.system if isinstance(request.system, str) else ""
        if not isinstance(request.system, str) and request.system is not None:
            system = "".join(part.text for part in request.system)
        last = request.messages[-1].text or ""
        output = self.lm.adapter_output(self.lm.reply(system, last))
        return Response(
            id=None,
            model="scripted",
            message=Message.assistant([TextPart(output)]),
            finish_reason="stop",
            usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0),
        )

    def close(self) -> None:
        pass


class _AsyncScriptedEngine:
    def __init__(self, sync: _ScriptedEngine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        return self.sync.complete(request)

    async def aclose(self) -> None:
        pass


class ScriptedToolLM(DummyLM):  # type: ignore[misc]
    """ReAct driver: call ``weather(city=<city in the question>)``, finish, answer with it."""

    def __init__(self) -> None:
        super().__init__({})
        self._engine_spec = _ScriptedEngine(self)
        self._async_engine_spec = _AsyncScriptedEngine(self._engine_spec)

    def reply(self, system: str, last: str) -> dict[str, Any]:
        if "next_tool_name" in system:  # a ReAct step
            if "observation_0" in last:
                return {
                    "next_thought": "I know it.",
                    "next_tool_name": "finish",
                    "next_tool_args": {},
                }
            city = re.search(r"weather in (\w+)", last)
            return {
                "next_thought": "Ask the weather tool.",
                "next_tool_name": "weather",
                "next_tool_args": {"city": city.group(1) if city else "nowhere"},
            }
        observed = re.search(r"forecast for \w+: \w+", last)
        return {"reasoning": "From the tool.", "answer": observed.group() if observed else "?"}

    def adapter_output(self, values: dict[str, Any]) -> str:
        return str(self._format_answer_fields(values))


class ReActInWorker(dspy.Module):  # type: ignore[misc]
    """A ReAct agent with its own scripted LM; reports the worker pid with the prediction."""

    def __init__(self, tools: list[Any]) -> None:
        super().__init__()
        self.lm = ScriptedToolLM()
        self.agent = dspy.ReAct("question -> answer", tools=tools, max_iters=3)

    def forward(self, question: str) -> Any:
        with dspy.context(lm=self.lm):
            prediction = self.agent(question=question)
        prediction.pid = os.getpid()
        return prediction


def run_owner(address: str, session_id: str, ready: Path, started: Path) -> None:
    """Join the session, own ``owner_pid`` and ``stall`` tools, then wait to be killed.

    ``ready`` is written once the tools are served; ``stall`` writes ``started`` and then
    sleeps, so the test can kill this process in the middle of a call.
    """
    with dspex.Session(address, session_id=session_id):

        @dspex.tool
        def owner_pid() -> int:
            """The process id of the owner."""
            return os.getpid()

        @dspex.tool
        def stall(seconds: float) -> str:
            """Sleep for a while (the test kills the owner meanwhile)."""
            started.write_text("running")
            time.sleep(seconds)
            return "woke up"

        ready.write_text(str(os.getpid()))
        time.sleep(600)
