"""Programs and recorders for the dspex.compile tests, in an importable module (workers load it).

``QA`` answers with one ``dspy.Predict`` and returns, with the prediction, the process that ran
it and the messages its LM request carried (recorded by a DSPy callback in that process), so a
test sees what every worker really sent.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

import dspex

INSTRUCTIONS = "Answer the question."


class LMRequests(BaseCallback):  # type: ignore[misc]
    """Records the messages of every LM request made while it is a callback."""

    def __init__(self) -> None:
        self.messages: list[list[tuple[str, str]]] = []
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        messages = [(str(m["role"]), str(m["content"])) for m in inputs.get("messages") or []]
        with self._lock:
            self.messages.append(messages)


class QA(dspy.Module):  # type: ignore[misc]
    """One predictor; the prediction also says which process ran it and what it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict("question -> answer")

    def forward(self, question: str, delay: float = 0.0) -> Any:
        time.sleep(delay)  # lets a map spread over every worker
        log = LMRequests()
        with dspy.context(callbacks=[*dspy.settings.callbacks, log]):
            prediction = self.predict(question=question)
        # A new Prediction: the predictor's own one is in the trace, where demos come from.
        return dspy.Prediction(
            answer=prediction.answer, pid=os.getpid(), messages=log.messages[-1]
        )


def bound_qa(prefix: str) -> Any:
    """A ``QA`` with its instructions and demos bound to ``<prefix>_instructions``/``_demos``."""
    return dspex.bind(
        QA(),
        instructions=dspex.Variable(str, INSTRUCTIONS, name=f"{prefix}_instructions"),
        demos=dspex.Variable(list, [], name=f"{prefix}_demos"),
    )


def plain_messages(state: dict[str, Any], question: str) -> list[tuple[str, str]]:
    """What plain DSPy sends for ``question`` from a ``dspy.Predict`` loaded with ``state``."""
    predictor = dspy.Predict("question -> answer")
    predictor.load_state({k: v for k, v in state.items() if k != "dspex_variables"})
    log = LMRequests()
    with dspy.context(callbacks=[log]):
        predictor(question=question)
    return log.messages[-1]


def demo_turns(messages: list[tuple[str, str]]) -> int:
    """How many demos a request carried (one assistant turn each)."""
    return sum(role == "assistant" for role, _ in messages)
