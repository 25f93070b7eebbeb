"""How the page shows a value: a short text for tables and plot labels, a number when it has one.

Numbers (``float``, ``integer``) plot on a numeric axis. Everything else (``boolean``,
``choice``, ``string``, ``module``, ``json``, ``embedding``, ``tensor``) plots as categories
labelled by its short text, with the longer text in the hover. Values too large to send to a
browser on every change (a big tensor, a long list of demos) travel as their text only.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["LABEL_CHARS", "MAX_VALUE_CHARS", "display", "json_text"]

LABEL_CHARS = 40
"""Longest label on a categorical plot axis."""
MAX_VALUE_CHARS = 4000
"""Values whose JSON text is longer are sent as text only (``value`` is None)."""
_HOVER_CHARS = 300
_NUMERIC_TYPES = ("float", "integer")


def display(type_name: str, value: Any) -> dict[str, Any]:
    """The page fields for a JSON-ready ``value`` of a variable of type ``type_name``.

    Returns ``label`` (at most :data:`LABEL_CHARS` characters), ``text`` (longer, for hovers
    and the value cell), ``number`` (the plot value for numeric types, else None) and
    ``value`` (the value itself, or None when its JSON is longer than :data:`MAX_VALUE_CHARS`).

    Examples:
        >>> display("float", 0.5)["number"]
        0.5
        >>> display("string", "Answer in one sentence, please.")["label"]
        'Answer in one sentence, please.'
    """
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    number = value if type_name in _NUMERIC_TYPES and _is_number(value) else None
    return {
        "label": _shorten(text, LABEL_CHARS),
        "text": _shorten(text, _HOVER_CHARS),
        "number": number,
        "value": value if len(text) <= MAX_VALUE_CHARS else None,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def json_text(message: Any) -> str:
    """``message`` as JSON text a browser can parse: NaN and infinities become null.

    Variable values are always finite, but published optimizer progress may not be (a failed
    trial's score), and ``JSON.parse`` refuses Python's ``NaN``. A plot leaves a gap at null.

    Examples:
        >>> json_text({"best_score": float("nan"), "iteration": 3})
        '{"best_score": null, "iteration": 3}'
    """
    try:
        return json.dumps(message, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(message), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
