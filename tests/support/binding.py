"""Helpers for the DSPy binding tests (tests/binding): an LM-call recorder and prompt readers."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from dspy.utils.callback import BaseCallback


@dataclass(frozen=True)
class LMCall:
    """What one LM call received: the LM's own kwargs merged with the call's, as sent."""

    thread: int
    model: str
    kwargs: dict[str, Any]
    system: str
    user: str


class CallRecorder(BaseCallback):
    """A DSPy callback that records every LM call: thread, model, kwargs and messages."""

    def __init__(self) -> None:
        self.calls: list[LMCall] = []
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        messages = inputs.get("messages") or []
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        user = "\n".join(m["content"] for m in messages if m.get("role") == "user")
        kwargs = {**(getattr(instance, "kwargs", None) or {}), **inputs["kwargs"]}
        call = LMCall(threading.get_ident(), instance.model, kwargs, system, user)
        with self._lock:
            self.calls.append(call)


def objective(system: str) -> str:
    """The instructions part of a DSPy adapter system message (whitespace collapsed)."""
    return " ".join(system.split("your objective is:", 1)[1].split())
