"""Programs and metrics for the dspex.tune tests, in an importable module (workers load it).

``ReadValues`` returns what the program reads through the current session at call time, plus
the process that ran it; the metrics score those values, so a trial's score says which values
its evaluation really saw.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dspex


class ReadValues:
    """Reads the tuned variables (after ``delay`` seconds) the way bound modules do."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def __call__(self, x: int, parent: int = 0) -> dict[str, Any]:
        session = dspex.current_session()
        if self.delay:
            time.sleep(self.delay)
        return {
            "temperature": session.get("temperature"),
            "top_k": session.get("top_k"),
            "style": session.get("style"),
            "pid": os.getpid(),
            "parent": parent,
        }


def seen_temperature(example: Any, prediction: dict[str, Any]) -> float:
    """The temperature the evaluation saw: equals the trial's own value iff it was pinned."""
    return float(prediction["temperature"])


def seen_elsewhere(example: Any, prediction: dict[str, Any]) -> float:
    """The temperature seen by a process other than the caller's; -1.0 if run by the caller."""
    return (
        -1.0
        if prediction["pid"] == prediction["parent"]
        else seen_temperature(example, prediction)
    )


def peak(example: Any, prediction: dict[str, Any]) -> float:
    """Best at temperature 0.3, top_k 7, style "terse"; in [0, 1]."""
    score = 1.0 - abs(prediction["temperature"] - 0.3) / 2.0
    score -= abs(prediction["top_k"] - 7) / 20.0
    return score - (0.0 if prediction["style"] == "terse" else 0.1)


def cool_enough(example: Any, prediction: dict[str, Any]) -> bool:
    """Per example: right when the temperature is below 0.5."""
    return bool(prediction["temperature"] < 0.5)


def devset(size: int) -> list[dict[str, int]]:
    """``size`` examples of keyword arguments (with this process's id as ``parent``)."""
    return [{"x": i, "parent": os.getpid()} for i in range(size)]


class FailsAt:
    """A metric that raises on its ``call``-th use (a broken metric mid-run)."""

    def __init__(self, call: int) -> None:
        self.call = call
        self.calls = 0

    def __call__(self, example: Any, prediction: dict[str, Any]) -> float:
        self.calls += 1
        if self.calls == self.call:
            raise RuntimeError("metric broke")
        return peak(example, prediction)


def reasoning_temperature(example: Any, prediction: Any) -> float:
    """The temperature SimLM reports it was called with ("... at temperature 0.42 about ...")."""
    return float(prediction.reasoning.split(" at temperature ")[1].split()[0])
