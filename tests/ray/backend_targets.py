"""Programs the Remote backend tests run in spawned workers and in Ray actors (by reference).

``Probe`` records, inside whichever process runs it, what its LM call really received (model,
temperature) through a DSPy callback, with the process id and a plain session read.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

import dspex
from dspex.tools import SessionTool

MODELS = dspex.Choice("dspex/sim-small", "dspex/sim", "dspex/sim-large")


class LMCallLog(BaseCallback):
    """Keeps the model and temperature of the last LM call this process made."""

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        kwargs = {**(instance.kwargs or {}), **inputs["kwargs"]}  # bound: on the LM copy
        self.last = {"model": instance.model, "temperature": kwargs["temperature"]}


class Probe(dspex.Program):
    """Answers with the bound temperature and model, and reports what its LM call used."""

    temperature = dspex.Variable(float, 0.7, min=0.0, max=2.0)
    model = dspex.Variable(MODELS, "dspex/sim")

    def __init__(self) -> None:
        super().__init__()
        self.log = LMCallLog()
        self.answer = dspex.bind(
            dspy.Predict("question -> answer"), temperature=Probe.temperature, lm=Probe.model
        )

    def forward(self, question: str) -> Any:
        with dspy.context(callbacks=[self.log]):
            prediction = self.answer(question=question)
        prediction.lm_call = self.log.last
        prediction.pid = os.getpid()
        prediction.read_temperature = dspex.current_session().get("temperature")
        return prediction


class Writer(dspy.Module):  # type: ignore[misc]
    """Writes a variable through the worker's session, then reads it back."""

    def forward(self, name: str, value: Any) -> Any:
        session = dspex.current_session()
        session.set(name, value)
        return dspy.Prediction(read=session.get(name), pid=os.getpid())


class Crashy(dspy.Module):  # type: ignore[misc]
    """Kills its own process: always, or only the first time (``marker`` does not exist yet)."""

    def forward(self, marker: str | None = None) -> Any:
        if marker is None or not Path(marker).exists():
            if marker is not None:
                Path(marker).write_text(str(os.getpid()))
            os._exit(3)
        return dspy.Prediction(pid=os.getpid())


class Sleepy(dspy.Module):  # type: ignore[misc]
    """Sleeps, then says which process it ran in (and what its environment holds)."""

    def forward(self, seconds: float, env: str = "") -> Any:
        time.sleep(seconds)
        return dspy.Prediction(pid=os.getpid(), env=os.environ.get(env) if env else None)


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


class ToolCaller:
    """Calls ``tool(**arguments)`` and reports the result with this process's id."""

    def __init__(self, tool: SessionTool) -> None:
        self.tool = tool

    def __call__(self, **arguments: Any) -> dict[str, Any]:
        return {"result": self.tool(**arguments), "pid": os.getpid()}
