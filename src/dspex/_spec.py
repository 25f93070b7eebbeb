"""Pure value model, part 1: variable types, constraint specs and read-only containers.

``make_spec`` turns a user-facing type plus constraints into a checked :class:`VariableSpec`;
``FrozenDict``/``FrozenList`` are the read-only ``dict``/``list`` that JSON values, constraints
and metadata take inside records. Re-exported by :mod:`dspex._model`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NoReturn

from dspex import errors
from dspex._canonical import in_int64
from dspex._pattern import check_pattern

__all__ = [
    "DTYPES",
    "EMPTY",
    "NUMERIC_KINDS",
    "TYPES",
    "Choice",
    "FrozenDict",
    "FrozenList",
    "VariableSpec",
    "dtype_name",
    "freeze",
    "make_spec",
    "normalize_type",
    "type_name",
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

NUMERIC_KINDS: Final = "biufc"
"""numpy dtype kinds a tensor may have: arrays travel as raw bytes, so no objects/strings."""

DTYPES: Final = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)
"""The canonical dtype spellings: the ``dtype`` constraint and ``Array.dtype`` on the wire."""

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


def type_name(value: Any) -> str:
    """The type of ``value`` as users know it, for messages: ``list``/``dict`` for the read-only
    containers that records hold, never ``FrozenList``/``FrozenDict``."""
    if isinstance(value, FrozenList):
        return "list"
    if isinstance(value, FrozenDict):
        return "dict"
    return type(value).__name__


@dataclass(frozen=True, slots=True, init=False)
class Choice:
    """A choice type: ``Choice("dspex/sim", "openai/gpt-4o-mini")`` allows exactly these values.

    Keyword choices map keys to objects that stay in the process:
    ``Choice(fast=dspy.LM("openai/gpt-4o-mini", api_key=...), local=dspy.LM(..., api_base=...))``
    allows the values ``"fast"`` and ``"local"``; only the key is stored in a session, and a
    ``bind(module, lm=...)`` of such a variable runs the mapped LM object.
    """

    choices: tuple[Any, ...]
    objects: Mapping[str, Any] = field(repr=False, compare=False)

    def __init__(self, *choices: Any, **objects: Any) -> None:
        object.__setattr__(self, "choices", (*choices, *objects))
        object.__setattr__(self, "objects", MappingProxyType(dict(objects)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _make_choice,
            (self.choices[: len(self.choices) - len(self.objects)], dict(self.objects)),
        )


def _make_choice(choices: tuple[Any, ...], objects: dict[str, Any]) -> Choice:
    return Choice(*choices, **objects)


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
    elif getattr(type_, "__origin__", None) in (list, dict):
        return "json"  # list[dict], dict[str, Any] ...: structured values such as demos
    elif getattr(type_, "__name__", "") == "ndarray":
        return "tensor"
    raise errors.ConstraintError(
        f"unknown variable type {type_!r}; use one of {', '.join(TYPES)}"
        " (or float, int, str, bool, dict, list, numpy.ndarray)",
        type=type_ if isinstance(type_, str) else repr(type_),  # a wire type name stays itself
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
        PatternError: ``pattern`` is not a valid regular expression in the portable dialect
            (:mod:`dspex._pattern`).
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
        return check_pattern(value, type_name)
    if key == "choices":
        return _check_choices(type_name, value)
    if key == "shape":
        return _check_shape(type_name, value)
    return _check_dtype(type_name, value)


def _check_choices(type_name: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise errors.ConstraintError(f"choices={value!r} must be a non-empty list", type=type_name)
    for choice in value:
        if not isinstance(choice, str | int | float | bool):
            raise errors.ConstraintError(
                f"choice {choice!r} must be a string, number or boolean", type=type_name
            )
        if isinstance(choice, int) and not in_int64(choice):
            raise errors.ConstraintError(
                f"choice {choice!r} is outside the 64-bit signed integer range", type=type_name
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
            f"dtype={value!r} is not a numpy dtype; use one of {', '.join(DTYPES)}",
            type=type_name,
        ) from exc
    if dtype.kind not in NUMERIC_KINDS:
        raise errors.ConstraintError(
            f"dtype={value!r} is not numeric; tensors hold bool, int, uint, float or complex",
            type=type_name,
        )
    return dtype_name(dtype, type_name)


def dtype_name(dtype: Any, type_name: str = "tensor") -> str:
    """The canonical wire spelling of a numpy dtype (``"float64"``, never ``"<f8"`` or ``"d"``).

    Byte order is not part of the name: arrays always travel little-endian.

    Raises:
        ConstraintError: the dtype has no portable name (``float128``, strings, objects ...).
    """
    name: str = dtype.newbyteorder("=").name if dtype.byteorder not in "=|" else dtype.name
    if name not in DTYPES:
        raise errors.ConstraintError(
            f"dtype {name!r} is not portable; use one of {', '.join(DTYPES)}", type=type_name
        )
    return name


def _check_bounds(type_name: str, checked: dict[str, Any], low: str, high: str) -> None:
    if low in checked and high in checked and checked[low] > checked[high]:
        raise errors.ConstraintError(
            f"{low}={checked[low]!r} is greater than {high}={checked[high]!r}", type=type_name
        )
