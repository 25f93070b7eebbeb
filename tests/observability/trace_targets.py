"""A program for the trace test, in an importable module (shipped by reference to workers).

The bound module writes to the session from inside its call, so a traced worker makes a store
RPC under the bound call's span: the trace shows test -> bound call (worker) -> client RPC
(worker) -> server RPC (store).
"""

from __future__ import annotations

import os
from typing import Any

import dspy

import dspex


class Answer(dspy.Module):  # type: ignore[misc]
    """Predicts with the simulated LM, then records its answer in the session."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        with dspy.context(lm=dspex.SimLM("dspex/sim")):
            prediction = self.predict(question=question)
        dspex.current_session().set("last_answer", str(prediction.answer))
        return prediction


class Traced(dspex.Program):
    """One bound call per request; reports the process it ran in."""

    temperature = dspex.Variable(float, 0.7, min=0.0, max=2.0)
    last_answer = dspex.Variable(str, "")

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.bind(Answer(), temperature=Traced.temperature)

    def forward(self, question: str) -> Any:
        prediction = self.answer(question=question)
        prediction.pid = os.getpid()
        return prediction
