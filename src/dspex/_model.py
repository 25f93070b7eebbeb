"""Pure value model shared by every layer: variable specs, validation and immutable records.

No I/O and no locks live here. ``validate`` is the one validation function every backend uses,
so a value is accepted or refused with the same message whether the session is local or remote.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import reprlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, NoReturn

from dspex import errors

__all__ = [
    "EMPTY",
    "TYPES",
    "Choice",
    "FrozenDict",
    "FrozenList",
    "SessionInfo",
    "VariableRecord",
    "VariableSpec",
    "VariableUpdate",
    "freeze",
    "make_spec",
    "normalize_type",
    "validate",
]

TYPES: Final = (
    "float",
    "integer",
    "string",
    "boolean",
    "choice",
    "module",
    "embedding",
    "tensor",
    "json",
)

_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "float": frozenset({"min", "max"}),
    "integer": frozenset({"min", "max"}),
    "string": frozenset({"min_length", "max_length", "pattern", "choices"}),
    "boolean": frozenset(),
    "choice": frozenset({"choices"}),
    "module": frozenset({"choices", "pattern"}),
    "embedding": frozenset({"dimensions", "min", "max"}),
    "tensor": frozenset({"shape", "dtype"}),
    "json": frozenset({"max_length"}),
}

_MAX_FLOAT: Final = sys.float_info.max

_NUMERIC_KINDS: Final = "biufc"
"""numpy dtype kinds a tensor may have: arrays travel as raw bytes, so no objects/strings."""

_PY_TYPES: Final[dict[Any, str]] = {
    float: "float",
    int: "integer",
    str: "string",
    bool: "boolean",
    dict: "json",
    list: "json",
}


def _read_only(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(
        f"{type(self).__name__} is read-only: variable values are immutable snapshots; "
        "copy it (e.g. dict(value) or list(value)), change the copy and set that"
    )


class FrozenDict(dict[str, Any]):
    """A read-only ``dict``: JSON objects, constraints and metadata inside records.

    It is a real ``dict`` (``json.dumps``, ``==`` and ``isinstance`` work), but every mutating
    method raises ``TypeError``, so a record handed to one reader can never change under another.
    ``dict(value)`` or ``value.copy()`` gives a mutable copy.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


class FrozenList(list[Any]):
    """A read-only ``list``: JSON arrays inside records (see :class:`FrozenDict`)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))


# One shared refusal for every mutating method (assigned, not written out twenty times).
for _method in ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "setdefault",
                "update"):  # fmt: skip
    setattr(FrozenDict, _method, _read_only)
for _method in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend",
                "insert", "pop", "remove", "clear", "sort", "reverse"):  # fmt: skip
    setattr(FrozenList, _method, _read_only)

EMPTY: Final = FrozenDict()
"""The shared empty metadata/constraints mapping."""


def freeze(value: Any) -> Any:
    """Return a copy of ``value`` with every ``dict``/``list`` inside made read-only."""
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList([freeze(v) for v in value])
    return value


@dataclass(frozen=True, slots=True, init=False)
class Choice:
    """A choice type: ``Choice("dspex/sim", "openai/gpt-4o-mini")`` allows exactly these values."""

    choices: tuple[Any, ...]

    def __init__(self, *choices: Any) -> None:
        object.__setattr__(self, "choices", tuple(choices))


def normalize_type(type_: Any) -> str:
    """Map a user-facing type (``float``, ``"integer"``, ``np.ndarray`` ...) to a type name.

    Raises:
        ConstraintError: the type is not one dspex knows.
    """
    if isinstance(type_, str):
        if type_ in TYPES:
            return type_
        aliases = {"int": "integer", "str": "string", "bool": "boolean", "ndarray": "tensor"}
        if type_ in aliases:
            return aliases[type_]
    elif isinstance(type_, type) and type_ in _PY_TYPES:
        return _PY_TYPES[type_]
    elif getattr(type_, "__name__", "") == "ndarray":
        return "tensor"
    raise errors.ConstraintError(
        f"unknown variable type {type_!r}; use one of {', '.join(TYPES)}"
        " (or float, int, str, bool, dict, numpy.ndarray)",
        type=repr(type_),
    )


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """A variable's type plus its checked constraints. Build with :func:`make_spec`."""

    type: str
    constraints: Mapping[str, Any] = field(default_factory=FrozenDict)
    float_bounds: tuple[float, float] = field(init=False, repr=False, compare=False)
    """``(min, max)`` clamped to finite floats: one chained comparison checks a float value."""

    def __post_init__(self) -> None:
        # Records share their spec; a read-only mapping keeps every snapshot's rules fixed.
        if type(self.constraints) is not FrozenDict:
            object.__setattr__(self, "constraints", FrozenDict(self.constraints))
        bounds = (
            _finite_bound(self.constraints.get("min"), -_MAX_FLOAT),
            _finite_bound(self.constraints.get("max"), _MAX_FLOAT),
        )
        object.__setattr__(self, "float_bounds", bounds)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (constraints with tuples as lists) used on the wire and in files."""
        return {"type": self.type, "constraints": _jsonable(dict(self.constraints))}


def _finite_bound(value: Any, default: float) -> float:
    # A missing or non-numeric bound (make_spec refuses those anyway) means "no bound".
    if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
        return max(-_MAX_FLOAT, min(float(value), _MAX_FLOAT))
    return default


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def make_spec(type_: Any, **constraints: Any) -> VariableSpec:
    """Build a validated :class:`VariableSpec`.

    Raises:
        ConstraintError: unknown type or constraint key, or inconsistent bounds.
        PatternError: ``pattern`` is not a valid regular expression.
    """
    if isinstance(type_, Choice):
        type_, constraints = "choice", {**constraints, "choices": type_.choices}
    type_name = normalize_type(type_)
    unknown = set(constraints) - _ALLOWED[type_name]
    if unknown:
        raise errors.ConstraintError(
            f"constraint(s) {sorted(unknown)} do not apply to type {type_name!r}; "
            f"allowed: {sorted(_ALLOWED[type_name]) or 'none'}",
            type=type_name,
        )
    checked = {k: _check_constraint(type_name, k, v) for k, v in constraints.items()}
    _check_bounds(type_name, checked, "min", "max")
    _check_bounds(type_name, checked, "min_length", "max_length")
    if type_name == "choice" and "choices" not in checked:
        raise errors.ConstraintError("type 'choice' needs choices=[...]", type=type_name)
    if type_name == "embedding" and "dimensions" not in checked:
        raise errors.ConstraintError("type 'embedding' needs dimensions=N", type=type_name)
    return VariableSpec(type_name, FrozenDict(checked))


def _check_constraint(type_name: str, key: str, value: Any) -> Any:
    if key in ("min", "max"):
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise errors.ConstraintError(f"{key}={value!r} must be a number", type=type_name)
        return value
    if key in ("min_length", "max_length", "dimensions"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise errors.ConstraintError(
                f"{key}={value!r} must be a non-negative integer", type=type_name
            )
        return value
    if key == "pattern":
        return _check_pattern(type_name, value)
    if key == "choices":
        return _check_choices(type_name, value)
    if key == "shape":
        return _check_shape(type_name, value)
    return _check_dtype(type_name, value)


def _check_pattern(type_name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise errors.PatternError(f"pattern={value!r} must be a string", type=type_name)
    try:
        re.compile(value)
    except re.error as exc:
        raise errors.PatternError(
            f"pattern={value!r} is not a valid regular expression: {exc}", type=type_name
        ) from exc
    return value


def _check_choices(type_name: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise errors.ConstraintError(f"choices={value!r} must be a non-empty list", type=type_name)
    for choice in value:
        if not isinstance(choice, str | int | float | bool):
            raise errors.ConstraintError(
                f"choice {choice!r} must be a string, number or boolean", type=type_name
            )
    return tuple(value)


def _check_shape(type_name: str, value: Any) -> tuple[int | None, ...]:
    ok = isinstance(value, list | tuple) and all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in value
    )
    if not ok:
        raise errors.ConstraintError(
            f"shape={value!r} must be a list of non-negative ints (None = any size)",
            type=type_name,
        )
    return tuple(value)


def _check_dtype(type_name: str, value: Any) -> str:
    import numpy as np

    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError) as exc:
        raise errors.ConstraintError(
            f"dtype={value!r} is not a numpy dtype", type=type_name
        ) from exc
    if dtype.kind not in _NUMERIC_KINDS:
        raise errors.ConstraintError(
            f"dtype={value!r} is not numeric; tensors hold bool, int, uint, float or complex",
            type=type_name,
        )
    return str(dtype)


def _check_bounds(type_name: str, checked: dict[str, Any], low: str, high: str) -> None:
    if low in checked and high in checked and checked[low] > checked[high]:
        raise errors.ConstraintError(
            f"{low}={checked[low]!r} is greater than {high}={checked[high]!r}", type=type_name
        )


# --------------------------------------------------------------------------------------------
# validation


def validate(spec: VariableSpec, value: Any, name: str = "?") -> Any:
    """Check ``value`` against ``spec`` and return its canonical (immutable where possible) form.

    Canonical forms: float -> float, integer -> int, embedding -> tuple of floats,
    tensor -> read-only numpy array copy, json -> a fresh deep copy.

    Raises:
        VariableTypeError: the value has the wrong type.
        VariableValueError: the value breaks a constraint.
    """
    return _VALIDATORS[spec.type](spec, value, name)


def _type_error(name: str, value: Any, expected: str) -> errors.VariableTypeError:
    return errors.VariableTypeError(
        f"variable {name!r}: value {_short(value)} has type {type(value).__name__}, "
        f"expected {expected}",
        name=name,
        value=_short(value),
    )


def _value_error(name: str, value: Any, rule: str) -> errors.VariableValueError:
    return errors.VariableValueError(
        f"variable {name!r}: value {_short(value)} breaks rule {rule}",
        name=name,
        value=_short(value),
        rule=rule,
    )


def _short(value: Any) -> str:
    # reprlib bounds the work for huge or deeply nested values (plain repr would recurse).
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_REPR: Final = reprlib.Repr()
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
    if spec.constraints:
        _check_range(spec, result, name)
    return result


def _validate_string(spec: VariableSpec, value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _type_error(name, value, "string")
    _check_length(spec, value, name)
    _check_pattern_match(spec, value, name)
    if "choices" in spec.constraints and value not in spec.constraints["choices"]:
        raise _value_error(name, value, f"choices={list(spec.constraints['choices'])!r}")
    return value


def _check_length(spec: VariableSpec, value: Any, name: str) -> None:
    constraints = spec.constraints
    if "min_length" in constraints and len(value) < constraints["min_length"]:
        raise _value_error(name, value, f"min_length={constraints['min_length']}")
    if "max_length" in constraints and len(value) > constraints["max_length"]:
        raise _value_error(name, value, f"max_length={constraints['max_length']}")


def _check_pattern_match(spec: VariableSpec, value: str, name: str) -> None:
    pattern = spec.constraints.get("pattern")
    if pattern is not None and re.fullmatch(pattern, value) is None:
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
    if not isinstance(value, str) or not value:
        raise _type_error(name, value, "module or signature name (non-empty string)")
    _check_pattern_match(spec, value, name)
    if "choices" in spec.constraints and value not in spec.constraints["choices"]:
        raise _value_error(name, value, f"choices={list(spec.constraints['choices'])!r}")
    return value


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
    if value.dtype.kind not in _NUMERIC_KINDS:
        raise _type_error(name, value, f"numeric tensor (got dtype {value.dtype})")
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
        canonical = freeze(json.loads(text))
    except (TypeError, ValueError, RecursionError) as exc:
        raise _type_error(name, value, f"JSON-serializable value ({exc})") from exc
    if "max_length" in spec.constraints and len(text) > spec.constraints["max_length"]:
        raise _value_error(name, value, f"max_length={spec.constraints['max_length']} (JSON)")
    return canonical


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


# --------------------------------------------------------------------------------------------
# records


class VariableRecord(NamedTuple):
    """An immutable snapshot of one variable at one version.

    A NamedTuple rather than a frozen dataclass: a record is built on every write, and tuple
    construction is several times cheaper, which keeps a validated local set under 2 us.

    ``revision`` is the session revision at which this version was written; ``stale`` marks a
    downstream variable whose upstream changed since it was last written; ``lock`` describes the
    optimization lock holding the variable, if any.
    """

    name: str
    spec: VariableSpec
    value: Any
    version: int
    revision: int
    updated_at: float
    writer: str = ""
    metadata: Mapping[str, Any] = EMPTY
    stale: bool = False
    lock: Mapping[str, Any] | None = None

    @property
    def type(self) -> str:
        """The variable's type name."""
        return self.spec.type

    @property
    def constraints(self) -> Mapping[str, Any]:
        """The variable's constraints."""
        return self.spec.constraints


class VariableUpdate(NamedTuple):
    """One change delivered by a watch, in session revision order.

    ``kind`` is ``"initial"`` (current value sent when a watch starts), ``"register"``,
    ``"set"``, ``"delete"``, ``"rollback"``, ``"stale"`` or ``"lock"``. ``record`` is the
    variable after the change (its last record for ``"delete"``).
    """

    revision: int
    kind: str
    name: str
    record: VariableRecord


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A summary of one session in a store."""

    session_id: str
    created_at: float
    revision: int
    variable_count: int
    last_heartbeat: float
    ttl: float | None = None
