"""Pure value model: the language-neutral forms of values (canonical JSON text, int64).

``max_length`` of a ``json`` variable counts the Unicode code points of the value's canonical
JSON text, so every language measures the same number. The canonical text is RFC 8785 (JSON
Canonicalization Scheme): no whitespace, object members sorted by their UTF-16 code units,
strings escaped only where JSON requires it (``"`` ``\\`` and control characters, with the short
forms ``\\b \\t \\n \\f \\r`` and lowercase ``\\u00xx``), numbers written as ECMAScript writes them
(``1.0`` -> ``1``, ``1e21`` -> ``1e+21``, ``1e-7`` -> ``1e-7``). In JavaScript that is
``[...canonicalize(value)].length``; in Python :func:`canonical_json`.

Integers are 64-bit signed everywhere a value can hold one (integer variables, numbers inside
``json`` values, choices), so every client can read back exactly what was written.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Int64RangeError",
    "canonical_json",
    "es_number",
    "in_int64",
    "parse_int64",
]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


class Int64RangeError(ValueError):
    """An integer literal outside the 64-bit signed range (raised by :func:`parse_int64`)."""


def in_int64(value: int) -> bool:
    """True if ``value`` fits the 64-bit signed range every client can hold exactly."""
    return INT64_MIN <= value <= INT64_MAX


def parse_int64(text: str) -> int:
    """``json.loads(..., parse_int=parse_int64)``: an integer literal, refused beyond int64.

    Raises:
        Int64RangeError: the literal is outside the 64-bit signed range.
    """
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise Int64RangeError(f"integer {text} is outside the 64-bit signed range [-2^63, 2^63-1]")
    return value


def canonical_json(value: Any) -> str:
    """The RFC 8785 canonical JSON text of a plain JSON value (dict, list, str, number, bool,
    None), as used for the ``max_length`` of ``json`` variables.

    Raises:
        TypeError: ``value`` holds something that is not plain JSON.
        ValueError: a float is NaN or infinite.
    """
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, parts: list[str]) -> None:
    if value is None or value is True or value is False:
        parts.append("null" if value is None else "true" if value else "false")
    elif isinstance(value, str):
        parts.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        parts.append(str(int(value)))
    elif isinstance(value, float):
        parts.append(es_number(value))
    elif isinstance(value, dict):
        parts.append("{")
        for index, key in enumerate(sorted(value, key=_utf16_key)):
            if index:
                parts.append(",")
            parts.append(json.dumps(str(key), ensure_ascii=False) + ":")
            _write(value[key], parts)
        parts.append("}")
    elif isinstance(value, list | tuple):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _write(item, parts)
        parts.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not a plain JSON value")


def _utf16_key(key: Any) -> bytes:
    return str(key).encode("utf-16-be", "surrogatepass")


def es_number(value: float) -> str:
    """``value`` written as ECMAScript's ``Number.prototype.toString`` (RFC 8785 numbers).

    Raises:
        ValueError: NaN or an infinity (not JSON).
    """
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a JSON number")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits, point = _shortest_digits(abs(value))
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = point - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{'+' if exponent > 0 else '-'}{abs(exponent)}"


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest round-trip digits of a positive float and the decimal point position:
    ``value == 0.<digits> * 10**point`` (Python's ``repr`` finds the same digits as ECMAScript).
    """
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    return stripped.rstrip("0"), point
