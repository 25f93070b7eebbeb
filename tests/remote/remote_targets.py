"""Programs for the dspex.Remote tests, in an importable module (shipped by reference).

``Probe`` records, inside whichever process runs it, what its LM call really received (model,
LM keyword arguments, system prompt) through a DSPy callback, and returns that record with the
prediction, together with the process id and the temperature it reads through the session.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

import dspex

MODELS = dspex.Choice("dspex/sim-small", "dspex/sim", "dspex/sim-large")


class LMCallLog(BaseCallback):
    """Keeps the last LM call this process made: model, kwargs and system prompt."""

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        messages = inputs.get("messages") or []
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        self.last = {
            "model": instance.model,
            "kwargs": {**(instance.kwargs or {}), **inputs["kwargs"]},  # bound: on the LM copy
            "system": system,
            "pid": os.getpid(),
        }


def objective(system: str) -> str:
    """The instructions part of a DSPy adapter system message (whitespace collapsed)."""
    return " ".join(system.split("your objective is:", 1)[1].split())


class Probe(dspex.Program):
    """Answers with the bound temperature, instructions and model, and reports what it used."""

    temperature = dspex.Variable(float, 0.7, min=0.0, max=2.0)
    instructions = dspex.Variable(str, "Answer in one word.")
    model = dspex.Variable(MODELS, "dspex/sim")

    def __init__(self) -> None:
        super().__init__()
        self.log = LMCallLog()
        self.answer = dspex.bind(
            dspy.ChainOfThought("question -> answer"),
            temperature=Probe.temperature,
            instructions=Probe.instructions,
            lm=Probe.model,
        )

    def forward(self, question: str) -> Any:
        with dspy.context(callbacks=[self.log]):
            prediction = self.answer(question=question)
        prediction.lm_call = self.log.last
        prediction.pid = os.getpid()
        # A plain read through the session: in a worker it is served by the watched cache.
        prediction.read_temperature = dspex.current_session().get("temperature")
        return prediction


class Crashy(dspex.Program):
    """Kills its own process: always, or only the first time (``marker`` does not exist yet)."""

    temperature = dspex.Variable(float, 0.7, min=0.0, max=2.0)

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.bind(
            dspy.Predict("question -> answer"), temperature=Crashy.temperature
        )

    def forward(self, question: str, marker: str | None = None) -> Any:
        if marker is None or not Path(marker).exists():
            if marker is not None:
                Path(marker).write_text(str(os.getpid()))
            os._exit(3)
        with dspy.context(lm=dspex.SimLM("dspex/sim")):
            prediction = self.answer(question=question)
        prediction.pid = os.getpid()
        return prediction


class Sleepy(dspy.Module):  # type: ignore[misc]
    """Sleeps, then says which process it ran in."""

    def forward(self, seconds: float) -> Any:
        time.sleep(seconds)
        return dspy.Prediction(pid=os.getpid(), slept=seconds)


class Failing(dspy.Module):  # type: ignore[misc]
    """Raises the error it is asked to."""

    def forward(self, kind: str) -> Any:
        if kind == "value":
            raise ValueError("the module refused this input")
        # A dspex error raised in the worker comes back with its own type and details.
        dspex.current_session().set("temperature", 99.0)
        return dspy.Prediction()


class HoldsALock(dspy.Module):  # type: ignore[misc]
    """Cannot be pickled: it keeps a live lock."""

    def __init__(self) -> None:
        super().__init__()
        self.guard = threading.Lock()

    def forward(self, question: str) -> Any:
        return dspy.Prediction(answer=question)


class UsesConfiguredLM(dspy.Module):  # type: ignore[misc]
    """No bound model: runs on whatever LM ``dspy.settings`` holds in its process."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspy.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        prediction = self.answer(question=question)
        prediction.model = dspy.settings.lm.model
        prediction.cpu_work = getattr(dspy.settings.lm, "cpu_work", None)
        return prediction


class ReadsAndCallsTool:
    """Reads a session variable and calls the parent's ``echo`` tool, both through the store."""

    def __call__(self, name: str) -> dict[str, Any]:
        session = dspex.current_session()
        return {
            "value": session.get(name),
            "tool": session.call_tool("echo", {"text": name}),
            "pid": os.getpid(),
        }
