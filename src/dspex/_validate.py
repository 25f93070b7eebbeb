"""Pure value model, part 2: ``validate``, the one validation function every backend uses.

A value is accepted or refused with the same message whether the session is local or remote.
Messages name the variable, the value and the rule. Re-exported by :mod:`dspex._model`.
"""

from __future__ import annotations

import json
import math
import numbers
import reprlib
from collections.abc import Mapping
from typing import Any, Final

from dspex import errors
from dspex._canonical import INT64_MAX, INT64_MIN, Int64RangeError, canonical_json, parse_int64
from dspex._pattern import compiled
from dspex._spec import DTYPES, NUMERIC_KINDS, VariableSpec, freeze, normalize_type, type_name

__all__ = ["json_default", "plain_metadata", "validate"]


def validate(spec: VariableSpec, value: Any, name: str = "?") -> Any:
    """Check ``value`` against ``spec`` and return its canonical (immutable where possible) form.

    Canonical forms: float -> float, integer -> int, string -> str, embedding -> tuple of
    floats, tensor -> read-only numpy array copy, json -> a read-only copy of the JSON round
    trip (:class:`FrozenDict` / :class:`FrozenList`, which are ``dict`` / ``list``).

    Raises:
        VariableTypeError: the value has the wrong type.
        VariableValueError: the value breaks a constraint.
        ConstraintError: ``spec`` names an unknown type (build specs with :func:`make_spec`).
    """
    try:
        validator = _VALIDATORS[spec.type]
    except KeyError:
        normalize_type(spec.type)  # raises ConstraintError naming the known types
        raise  # pragma: no cover - normalize_type accepts only names _VALIDATORS has
    return validator(spec, value, name)


def _type_error(name: str, value: Any, expected: str) -> errors.VariableTypeError:
    return errors.VariableTypeError(
        f"variable {name!r}: value {_short(value)} has type {type_name(value)}, "
        f"expected {expected}",
        name=name,
        value=plain_detail(value),
    )


def _value_error(name: str, value: Any, rule: str) -> errors.VariableValueError:
    return errors.VariableValueError(
        f"variable {name!r}: value {_short(value)} breaks rule {rule}",
        name=name,
        value=plain_detail(value),
        rule=rule,
    )


def plain_detail(value: Any) -> Any:
    """``value`` as an error detail any client can read: a plain JSON value, never a repr.

    Short JSON values stay themselves; an array becomes ``{"dtype", "shape"}``; anything else
    (too long, not JSON, out of the int64 range) a shortened text.
    """
    if isinstance(value, str):
        return value if len(value) <= _DETAIL_CHARS else value[: _DETAIL_CHARS - 3] + "..."
    ndim = getattr(value, "ndim", None)
    if ndim == 0:
        value = value.item()  # numpy scalar -> Python number
    elif ndim is not None:
        return {"dtype": str(value.dtype), "shape": list(value.shape)}
    try:
        text = json.dumps(value, allow_nan=False)
        if len(text) <= _DETAIL_CHARS:
            return json.loads(text, parse_int=parse_int64)
    except (TypeError, ValueError, RecursionError):
        pass
    return _short(value)


_DETAIL_CHARS: Final = 200


def plain_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metadata`` as every store keeps it: a JSON object, as its JSON text reads back.

    The in-process store keeps what a session store returns (string keys, numpy values as
    lists), so metadata reads the same wherever the session lives, and what no store could send
    is refused at once, not when the session is later promoted for workers.

    Raises:
        VariableValueError: ``metadata`` is not a mapping of JSON values (the message names
            the value that is not).
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise errors.VariableValueError(
            f"metadata must be a mapping of JSON values, got {type_name(metadata)}"
        )
    try:
        text = json.dumps(dict(metadata), default=json_default, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise errors.VariableValueError(
            f"metadata must be JSON-serializable ({exc}); give str keys and JSON values "
            "(str, int, finite float, bool, None, lists and dicts of them)"
        ) from exc
    return json.loads(text)  # type: ignore[no-any-return]


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default`` for dspex values: numpy scalars and arrays (nested inside
    lists and dicts too) as lists and numbers; anything else is not JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type_name(value)} is not JSON serializable")


def _short(value: Any) -> str:
    # reprlib bounds the work for huge or deeply nested values (plain repr would recurse).
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _BoundedRepr(reprlib.Repr):
    """reprlib's bounded repr, which also shows an int too long for ``repr`` (Python refuses
    to convert ints of over 4300 digits to text) instead of raising ``ValueError``."""

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:
            return f"<int of {x.bit_length()} bits>"


_REPR: Final = _BoundedRepr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _check_range(spec: VariableSpec, value: float, name: str) -> None:
    constraints = spec.constraints
    if "min" in constraints and value < constraints["min"]:
        raise _value_error(name, value, f"min={constraints['min']!r}")
    if "max" in constraints and value > constraints["max"]:
        raise _value_error(name, value, f"max={constraints['max']!r}")


def _validate_float(spec: VariableSpec, value: Any, name: str) -> float:
    result: float = value if value.__class__ is float else _to_float(value, name)
    low, high = spec.float_bounds
    # Bounds are finite, so this one comparison also refuses NaN (never compares true) and
    # +-inf: non-finite floats are refused because values travel as strict JSON.
    if not low <= result <= high:
        if result - result != 0.0:
            raise _value_error(name, value, "finite (not NaN or infinity)")
        _check_range(spec, result, name)
    return result


def _to_float(value: Any, name: str) -> float:
    # numbers.Real admits int, numpy scalars and Fraction; bool is a number to Python, not to us.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _type_error(name, value, "float")
    try:
        return float(value)
    except OverflowError:
        raise _value_error(name, value, "finite (not NaN or infinity)") from None


def _validate_integer(spec: VariableSpec, value: Any, name: str) -> int:
    result: int
    if value.__class__ is int:
        result = value
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        result = int(value)
    elif (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value).is_integer()
    ):
        result = int(float(value))  # 3.0 -> 3: an integral float is an integer value
    else:
        raise _type_error(name, value, "integer")
    if not INT64_MIN <= result <= INT64_MAX:
        raise _value_error(name, value, "64-bit signed range [-2^63, 2^63-1]")
    if spec.constraints:
        _check_range(spec, result, name)
    return result


def _validate_string(spec: VariableSpec, value: Any, name: str) -> str:
    text: str = value if value.__class__ is str else _to_str(value, name, "string")
    _check_length(spec, text, name)
    _check_pattern_match(spec, text, name)
    if "choices" in spec.constraints and text not in spec.constraints["choices"]:
        raise _value_error(name, text, f"choices={list(spec.constraints['choices'])!r}")
    return text


def _to_str(value: Any, name: str, expected: str) -> str:
    if not isinstance(value, str):
        raise _type_error(name, value, expected)
    return str(value)  # a str subclass (numpy.str_ ...) is stored as a plain str


def _check_length(spec: VariableSpec, value: Any, name: str) -> None:
    constraints = spec.constraints
    if "min_length" in constraints and len(value) < constraints["min_length"]:
        raise _value_error(name, value, f"min_length={constraints['min_length']}")
    if "max_length" in constraints and len(value) > constraints["max_length"]:
        raise _value_error(name, value, f"max_length={constraints['max_length']}")


def _check_pattern_match(spec: VariableSpec, value: str, name: str) -> None:
    pattern = spec.constraints.get("pattern")
    if pattern is not None and compiled(pattern).fullmatch(value) is None:
        raise _value_error(name, value, f"pattern={pattern!r} (full match)")


def _validate_boolean(spec: VariableSpec, value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _type_error(name, value, "boolean")
    return value


def _validate_choice(spec: VariableSpec, value: Any, name: str) -> Any:
    choices = spec.constraints["choices"]
    if not isinstance(value, str | numbers.Real):
        raise _type_error(name, value, f"one of {list(choices)!r}")
    is_bool = isinstance(value, bool)
    for choice in choices:
        # True == 1 in Python; a boolean only matches a boolean choice and a number a number.
        if choice == value and isinstance(choice, bool) is is_bool:
            return choice  # canonical: the declared choice itself (1.0 -> 1 if 1 was declared)
    raise _value_error(name, value, f"choices={list(choices)!r}")


def _validate_module(spec: VariableSpec, value: Any, name: str) -> str:
    expected = "module or signature name (non-empty string)"
    text = _to_str(value, name, expected)
    if not text:
        raise _type_error(name, value, expected)
    _check_pattern_match(spec, text, name)
    if "choices" in spec.constraints and text not in spec.constraints["choices"]:
        raise _value_error(name, text, f"choices={list(spec.constraints['choices'])!r}")
    return text


def _validate_embedding(spec: VariableSpec, value: Any, name: str) -> tuple[float, ...]:
    if hasattr(value, "tolist") and getattr(value, "ndim", 1) == 1:
        value = value.tolist()
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise _type_error(name, value, "embedding (list of floats or 1-D array)")
    dims = spec.constraints["dimensions"]
    if len(value) != dims:
        raise _value_error(name, value, f"dimensions={dims} (got {len(value)})")
    out = tuple(_validate_float(spec, v, name) for v in value)
    return out


def _validate_tensor(spec: VariableSpec, value: Any, name: str) -> Any:
    import numpy as np

    if not isinstance(value, np.ndarray):
        if not isinstance(value, list | tuple):
            raise _type_error(name, value, "tensor (numpy array or nested list)")
        try:
            value = np.asarray(value, dtype=spec.constraints.get("dtype"))
        except (TypeError, ValueError, OverflowError) as exc:
            raise _type_error(name, value, f"rectangular numeric nested list ({exc})") from exc
    if value.dtype.kind not in NUMERIC_KINDS:
        raise _type_error(name, value, f"numeric tensor (got dtype {value.dtype})")
    if value.dtype.newbyteorder("=").name not in DTYPES:
        raise _type_error(name, value, f"tensor of a portable dtype (got {value.dtype})")
    _check_tensor(spec, value, name)
    out = np.array(value, copy=True)
    out.flags.writeable = False
    # Hand out a view: numpy lets an array that owns its memory be made writeable again,
    # but refuses that for a view of a read-only base, so the snapshot stays immutable.
    return out.view()


def _check_tensor(spec: VariableSpec, value: Any, name: str) -> None:
    dtype = spec.constraints.get("dtype")
    if dtype is not None and str(value.dtype) != dtype:
        raise _value_error(name, value, f"dtype={dtype} (got {value.dtype})")
    shape = spec.constraints.get("shape")
    if shape is not None:
        fits = len(shape) == value.ndim and all(
            want is None or want == got for want, got in zip(shape, value.shape, strict=True)
        )
        if not fits:
            raise _value_error(name, value, f"shape={list(shape)} (got {list(value.shape)})")


def _validate_json(spec: VariableSpec, value: Any, name: str) -> Any:
    try:
        text = json.dumps(value, allow_nan=False)
        # The JSON round trip is the canonical form (tuples -> lists, keys -> str); freezing it
        # keeps the stored snapshot and its history safe from callers mutating what they read.
        plain = json.loads(text, parse_int=parse_int64)
    except Int64RangeError:
        raise _value_error(name, value, "integers in the 64-bit signed range") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise _type_error(name, value, f"JSON-serializable value ({exc})") from exc
    limit = spec.constraints.get("max_length")
    # Measured on the canonical (RFC 8785) text so every language counts the same length.
    if limit is not None and len(canonical_json(plain)) > limit:
        raise _value_error(name, value, f"max_length={limit} (canonical JSON)")
    return freeze(plain)


_VALIDATORS: Final = {
    "float": _validate_float,
    "integer": _validate_integer,
    "string": _validate_string,
    "boolean": _validate_boolean,
    "choice": _validate_choice,
    "module": _validate_module,
    "embedding": _validate_embedding,
    "tensor": _validate_tensor,
    "json": _validate_json,
}
