"""Layer 2, gRPC adapter: dspex errors worded as the original snakepit bridge worded them.

Clients of the original server match substrings of the status details: ``"not found"``,
``"Session not found: <id>"``, ``"Variable not found: <identifier>"``, ``"above maximum"``,
``"variable_locked_for_optimization"``. The error keeps its class, so its status and its
standard details (``google.rpc.ErrorInfo`` with the stable code) are dspex's; only the message
leads with the original phrase and keeps dspex's explanation after it.
"""

from __future__ import annotations

from typing import Any

import dspex.errors as errors

__all__ = ["snakepit_error"]


def snakepit_error(exc: errors.DspexError, request: Any, key: str = "") -> errors.DspexError:
    """``exc`` with the original server's wording first (``key``: the batch key at fault)."""
    phrase = _phrase(exc, request, key)
    if not phrase:
        return exc
    return type(exc)(f"{phrase} ({exc.message})", **exc.details)


def _phrase(exc: errors.DspexError, request: Any, key: str) -> str:
    if isinstance(exc, errors.SessionExistsError):
        return ""  # already worded as the original: "Session already exists: <id>"
    if isinstance(exc, errors.SessionError):
        return f"Session not found: {getattr(request, 'session_id', '')}"
    if isinstance(exc, errors.VariableNotFoundError):
        ident = key or getattr(request, "variable_identifier", "") or exc.details.get("name", "")
        return f"Variable not found: {ident}"
    if isinstance(exc, errors.LockedError):
        return "variable_locked_for_optimization"
    if isinstance(exc, errors.VariableTypeError):
        return "invalid type"
    if isinstance(exc, errors.VariableValueError):
        return _rule_phrase(exc.details.get("rule", ""), exc.details.get("value"))
    return ""


def _rule_phrase(rule: str, value: Any) -> str:
    """The original's message for a broken constraint (``rule`` as dspex names it)."""
    key, _, bound = rule.partition("=")
    bound = bound.split(" ")[0]
    length = len(value) if isinstance(value, str) else None
    phrases = {
        "max": f"value {value} is above maximum {bound}",
        "min": f"value {value} is below minimum {bound}",
        "max_length": f"must be at most {bound} characters, got {length}",
        "min_length": f"must be at least {bound} characters, got {length}",
        "pattern": f"must match pattern: {bound}",
        "choices": f"must be one of: {bound}",
        "dimensions": f"must have exactly {bound} dimensions",
        "shape": f"shape must be {bound}",
    }
    return phrases.get(key, "")
