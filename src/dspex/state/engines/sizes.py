"""Engines: how many bytes a value takes, and the error for reaching a byte limit.

Engines bound history and budgets in bytes, and the core's limits check sizes the same way, so
both sides use these (the core imports them from here: engines never import the core).
"""

from __future__ import annotations

import json
from typing import Any

import dspex.errors as errors
from dspex._model import VariableSpec

__all__ = ["SIZED_TYPES", "exceeded", "value_size"]

SIZED_TYPES = frozenset({"string", "module", "json", "tensor", "embedding"})
"""Value types whose size depends on the value (the others take a few bytes)."""


def exceeded(what: str, limit: int, hint: str) -> errors.LimitExceededError:
    """The error for reaching ``limit`` on ``what``; ``hint`` says what to do."""
    return errors.LimitExceededError(
        f"limit reached: {what} (limit {limit}); {hint}", limit=limit, what=what
    )


def value_size(spec: VariableSpec, value: Any) -> int:
    """Encoded size in bytes of a canonical value (JSON text, or raw array bytes)."""
    if spec.type == "tensor":
        return int(value.nbytes)
    if spec.type in ("string", "module"):
        return len(value.encode())
    if spec.type == "embedding":
        return 8 * len(value)
    return len(json.dumps(value, separators=(",", ":")).encode())
