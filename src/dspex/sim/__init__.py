"""Layer 3 (simulation): the offline simulation LM, its bundled dev set and metric.

``dspex/sim`` model names resolve to :class:`SimLM`, a deterministic simulation (not a model)
that answers the bundled dev set with a probability driven by instructions, temperature, demos
and model size, so a variable sweep visibly moves :func:`answer_match` scores offline.
"""

from __future__ import annotations

from typing import Any

import dspy

from dspex.errors import DspexError
from dspex.sim._lm import SIM_PREFIX, AsyncSimEngine, SimEngine, SimLM, burn_cpu, is_sim_model
from dspex.sim._oracle import correct_probability, knowledge

__all__ = [
    "SIM_PREFIX",
    "AsyncSimEngine",
    "SimEngine",
    "SimLM",
    "answer_match",
    "burn_cpu",
    "correct_probability",
    "is_sim_model",
    "knowledge",
    "load_devset",
]


def load_devset(task: str | None = None) -> list[Any]:
    """Return the bundled dev set as ``dspy.Example`` objects with input ``question``.

    Args:
        task: ``"arithmetic"``, ``"capital"`` or ``"sentiment"`` to keep one task (all by default).

    Raises:
        DspexError: ``task`` is not one of the bundled tasks (the message lists them).
    """
    examples = knowledge().examples
    tasks = sorted({ex["task"] for ex in examples})
    if task is not None and task not in tasks:
        raise DspexError(f"the bundled dev set has no task {task!r}; use one of {tasks}")
    return [
        dspy.Example(question=ex["question"], answer=ex["answer"], task=ex["task"]).with_inputs(
            "question"
        )
        for ex in examples
        if task is None or ex["task"] == task
    ]


def _norm(value: Any) -> str:
    return " ".join(str(value).lower().split()).strip(" .\"'")


def answer_match(example: Any, prediction: Any, trace: Any = None) -> bool:
    """``dspy.Evaluate`` metric: the prediction's ``answer`` equals the example's, normalized."""
    return _norm(getattr(prediction, "answer", "")) == _norm(example.answer)
