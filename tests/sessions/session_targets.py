"""Modules and LMs for the tests here, importable by worker processes (shipped by reference)."""

from __future__ import annotations

import os
import threading
from typing import Any

import dspy

import dspex


class LockedSimLM(dspex.SimLM):  # type: ignore[misc]
    """A simulation LM holding a live lock, as LMs with live clients do: it cannot be pickled."""

    def __init__(self, model: str = "dspex/sim") -> None:
        super().__init__(model)
        self.client_lock = threading.Lock()


class WhichLM(dspex.Program):
    """Answers with a bound temperature and reports the model its LM call used, and its pid."""

    temperature = dspex.Variable(float, 0.4, min=0.0, max=2.0)

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.bind(
            dspy.Predict("question -> answer"), temperature=WhichLM.temperature
        )

    def forward(self, question: str) -> Any:
        prediction = self.answer(question=question)
        prediction.model = dspy.settings.lm.model
        prediction.pid = os.getpid()
        return prediction
