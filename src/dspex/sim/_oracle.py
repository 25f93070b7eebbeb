"""Layer 3 (simulation): what the simulated model knows and how often it gets it right.

The simulation knows the answers of its bundled dev set (``dspex/data/sim_qa.json``) and can do
two-number arithmetic. Whether it *gives* the right answer is decided per question by comparing
a stable hash of the question with a probability::

    p = quality(model) + 0.30 * hint_match(instructions) - 0.20 * temperature
        + 0.04 * min(demos, 3) - 0.15 * penalty_words(instructions)

clamped to [0.02, 0.98]. ``hint_match`` is the share of the task's hint phrases found in the
instructions. Because the draw does not move when p moves, raising p never turns a correct
answer wrong: lower temperature or better instructions improve the metric monotonically, which
keeps tuning curves readable. Which wrong answer is given, and the reasoning text, depend on a
hash of the whole prompt, the instructions, the temperature and the model name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["Fact", "QUALITY", "correct_probability", "decide", "knowledge", "unit_hash"]

QUALITY: dict[str, float] = {"dspex/sim-small": 0.30, "dspex/sim": 0.45, "dspex/sim-large": 0.60}
"""Base accuracy per model name; other ``dspex/sim-*`` names get the ``dspex/sim`` figure."""

_ARITHMETIC = re.compile(r"(-?\d+)\s*([-+*/x])\s*(-?\d+)")


@dataclass(frozen=True)
class Fact:
    """One known question: its task, the right answer and plausible wrong ones."""

    task: str
    answer: str
    distractors: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Knowledge:
    facts: dict[str, Fact]
    hints: dict[str, tuple[str, ...]]
    penalties: tuple[str, ...]
    examples: tuple[dict[str, Any], ...]


def _normalize(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .?!\"'")


@lru_cache(maxsize=1)
def knowledge() -> _Knowledge:
    """Load the bundled dev set once."""
    raw = json.loads(resources.files("dspex").joinpath("data/sim_qa.json").read_text("utf-8"))
    facts = {
        _normalize(ex["question"]): Fact(
            ex["task"], ex["answer"], tuple(ex.get("distractors", ()))
        )
        for ex in raw["examples"]
    }
    hints = {task: tuple(spec["hints"]) for task, spec in raw["tasks"].items()}
    return _Knowledge(facts, hints, tuple(raw["penalties"]), tuple(raw["examples"]))


def lookup(question: str) -> Fact | None:
    """Return what the simulation knows about ``question`` (None when nothing)."""
    fact = knowledge().facts.get(_normalize(question))
    if fact is not None:
        return fact
    match = _ARITHMETIC.search(question)
    if match is None:
        return None
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    if op == "/" and b == 0:
        return None
    value = {"+": a + b, "-": a - b, "*": a * b, "x": a * b}.get(op)
    return Fact("arithmetic", str(value if value is not None else a // b))


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from ``parts`` (same parts, same number, every run)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def correct_probability(
    task: str, instructions: str, temperature: float, demos: int, model: str
) -> float:
    """The chance that the simulation answers a ``task`` question correctly."""
    kb = knowledge()
    lowered = instructions.lower()
    hints = kb.hints.get(task, ())
    match = sum(1 for h in hints if h in lowered) / len(hints) if hints else 0.0
    penalty = sum(1 for word in kb.penalties if word in lowered)
    base = QUALITY.get(model, QUALITY["dspex/sim"])
    p = base + 0.30 * match - 0.20 * temperature + 0.04 * min(demos, 3) - 0.15 * penalty
    return min(0.98, max(0.02, p))


def decide(
    question: str, *, instructions: str, temperature: float, demos: int, model: str, prompt: str
) -> str | None:
    """Return the simulated answer text to ``question``, or None when it knows nothing."""
    fact = lookup(question)
    if fact is None:
        return None
    p = correct_probability(fact.task, instructions, temperature, demos, model)
    if unit_hash(_normalize(question)) < p:
        return fact.answer
    noise = unit_hash(model, instructions, f"{temperature:.3f}", prompt)
    if fact.distractors:
        return fact.distractors[int(noise * len(fact.distractors))]
    if fact.task == "arithmetic":
        offset = 1 + int(noise * 9)
        return str(int(fact.answer) + (offset if noise < 0.5 else -offset))
    return f"not sure ({fact.answer[:1]}...)"
