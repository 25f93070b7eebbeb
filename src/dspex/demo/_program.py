"""Layer 3 demo: the DSPy program the demo runs in process and in worker processes.

It lives in an importable module so the workers unpickle it by reference. Its variables use the
same names and specs as the ones the local steps register, so the program picks up the values
(and history) those steps left in the session.
"""

from __future__ import annotations

from typing import Any

import dspy

from dspex._model import Choice
from dspex.binding import bind
from dspex.program import Program
from dspex.variables import Variable

__all__ = ["MODELS", "SAMPLE_QUESTIONS", "DemoQA"]

MODELS = Choice("dspex/sim-small", "dspex/sim", "dspex/sim-large")
"""The model choices: the three sizes of the offline simulation LM."""

SAMPLE_QUESTIONS = (
    "What is 17 + 25?",
    "What is the capital of Japan?",
    "Is this review positive or negative? 'The battery died after a day.'",
)


class DemoQA(Program):
    """Chain-of-thought question answering with bound temperature, instructions and model."""

    temperature = Variable(float, 0.7, min=0.0, max=2.0)
    instructions = Variable(str, "Answer in one sentence.", max_length=200)
    model = Variable(MODELS, "dspex/sim")

    def __init__(self) -> None:
        super().__init__()
        self.answer = bind(
            dspy.ChainOfThought("question -> answer"),
            temperature=DemoQA.temperature,
            instructions=DemoQA.instructions,
            lm=DemoQA.model,
        )

    def forward(self, question: str) -> Any:
        """Answer one question with the session's current values."""
        return self.answer(question=question)
