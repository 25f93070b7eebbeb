"""The pure value model: specs, the one validation function, canonical forms, records.

Property tests generate values and constraints and check that ``validate`` accepts a value if
and only if it is within the rules, and that what it returns is the canonical form.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import re
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dspex import errors
from dspex._model import (
    TYPES,
    Choice,
    FrozenDict,
    FrozenList,
    SessionInfo,
    VariableRecord,
    VariableSpec,
    VariableUpdate,
    freeze,
    make_spec,
    normalize_type,
    validate,
)

ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=3),
)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
INT64 = st.integers(-(2**63), 2**63 - 1)
JSON = st.recursive(
    st.none() | st.booleans() | INT64 | FINITE | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def accepts(spec: VariableSpec, value: Any) -> tuple[bool, Any]:
    try:
        return True, validate(spec, value, "v")
    except errors.VariableValueError as exc:
        assert "'v'" in str(exc), "the message names the variable"
        return False, exc


# -- types and specs ---------------------------------------------------------------------------


def test_there_are_nine_types() -> None:
    assert TYPES == (
        "float", "integer", "string", "boolean", "choice", "module", "embedding", "tensor", "json",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("given_type", "name"),
    [
        (float, "float"),
        (int, "integer"),
        (str, "string"),
        (bool, "boolean"),
        (dict, "json"),
        (list, "json"),
        (np.ndarray, "tensor"),
        ("int", "integer"),
        ("str", "string"),
        ("bool", "boolean"),
        ("ndarray", "tensor"),
        ("module", "module"),
        ("embedding", "embedding"),
    ],
)
def test_normalize_type_maps_python_types_and_names(given_type: Any, name: str) -> None:
    assert normalize_type(given_type) == name


@pytest.mark.parametrize("bad_type", [complex, "decimal", object, [1, 2], None])
def test_normalize_type_refuses_unknown_types(bad_type: Any) -> None:
    with pytest.raises(errors.ConstraintError, match="unknown variable type"):
        normalize_type(bad_type)


def test_the_unknown_type_error_names_every_python_type_accepted() -> None:
    with pytest.raises(errors.ConstraintError) as refused:
        normalize_type(tuple)
    for accepted in (float, int, str, bool, dict, list):
        assert normalize_type(accepted)  # accepted...
        assert re.search(rf"\b{accepted.__name__}\b", refused.value.message)  # ...and named


@pytest.mark.parametrize(
    ("type_", "constraints", "message"),
    [
        (float, {"min_length": 3}, "do not apply"),
        (float, {"min": 2, "max": 1}, "greater than"),
        (float, {"min": "0"}, "must be a number"),
        (float, {"max": float("nan")}, "must be a number"),
        (float, {"min": True}, "must be a number"),
        (str, {"min_length": -1}, "non-negative"),
        (str, {"min_length": 5, "max_length": 2}, "greater than"),
        (str, {"choices": []}, "non-empty"),
        (str, {"choices": "abc"}, "non-empty"),
        ("choice", {}, "needs choices"),
        ("choice", {"choices": [[1]]}, "string, number or boolean"),
        ("embedding", {}, "needs dimensions"),
        ("embedding", {"dimensions": 2.5}, "non-negative integer"),
        ("tensor", {"shape": [2, -1]}, "non-negative ints"),
        ("tensor", {"shape": "2x2"}, "non-negative ints"),
        ("tensor", {"dtype": "no-such-dtype"}, "not a numpy dtype"),
        ("tensor", {"dtype": "object"}, "not numeric"),
        ("tensor", {"dtype": "U5"}, "not numeric"),
        (bool, {"min": 0}, "do not apply"),
    ],
)
def test_make_spec_refuses_invalid_constraints(
    type_: Any, constraints: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.ConstraintError, match=message) as caught:
        make_spec(type_, **constraints)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("pattern", ["(", "[a-", "*x", 5])
def test_make_spec_refuses_invalid_patterns(pattern: Any) -> None:
    with pytest.raises(errors.PatternError, match="pattern"):
        make_spec(str, pattern=pattern)


def test_make_spec_canonical_form() -> None:
    spec = make_spec(Choice("a", "b"))
    assert spec == VariableSpec("choice", {"choices": ("a", "b")})
    assert make_spec("choice", choices=["a", "b"]) == spec
    assert make_spec("tensor", shape=[2, None], dtype=np.float32).constraints == {
        "shape": (2, None),
        "dtype": "float32",
    }
    assert spec.to_json() == {"type": "choice", "constraints": {"choices": ["a", "b"]}}
    json.dumps(make_spec("tensor", shape=[1], dtype="int8").to_json())


def test_spec_constraints_are_read_only_and_specs_pickle() -> None:
    spec = make_spec(float, min=0.0, max=2.0)
    with pytest.raises(TypeError, match="read-only"):
        spec.constraints["max"] = 5.0  # type: ignore[index]
    direct = VariableSpec("float", {"max": 1.0})
    assert isinstance(direct.constraints, FrozenDict)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert copy.deepcopy(spec) == spec
    assert pickle.loads(pickle.dumps(spec)).float_bounds == (0.0, 2.0)


# -- float and integer -------------------------------------------------------------------------


@given(
    low=st.none() | FINITE,
    high=st.none() | FINITE,
    value=ANYTHING | st.fractions() | st.floats(width=32).map(np.float32),
)
def test_float_accepted_iff_finite_real_within_bounds(
    low: float | None, high: float | None, value: Any
) -> None:
    assume(low is None or high is None or low <= high)
    constraints = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
    spec = make_spec(float, **constraints)
    ok, result = accepts(spec, value)
    is_real = isinstance(value, int | float | Fraction | np.floating) and not isinstance(
        value, bool
    )
    expected = is_real
    if is_real:
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf
        expected = (
            math.isfinite(as_float)
            and (low is None or as_float >= low)
            and (high is None or as_float <= high)
        )
    assert ok is expected, (value, constraints, result)
    if ok:
        assert type(result) is float
        assert result == float(value)
        assert validate(spec, result) == result
    elif not is_real:
        assert isinstance(result, errors.VariableTypeError)
    else:
        assert not isinstance(result, errors.VariableTypeError)
        assert re.search(r"finite|min=|max=", str(result))


@given(
    low=st.none() | st.integers(-100, 100),
    high=st.none() | st.integers(-100, 100),
    value=ANYTHING | st.integers(-200, 200).map(np.int64) | st.integers(-200, 200).map(float),
)
def test_integer_accepted_iff_integral_within_bounds(
    low: int | None, high: int | None, value: Any
) -> None:
    assume(low is None or high is None or low <= high)
    constraints = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
    spec = make_spec(int, **constraints)
    ok, result = accepts(spec, value)
    integral = (
        isinstance(value, int | np.integer)
        or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    ) and not isinstance(value, bool)
    expected = (
        integral
        and -(2**63) <= int(value) < 2**63  # integers are int64 on the wire (docs/protocol.md)
        and (low is None or int(value) >= low)
        and (high is None or int(value) <= high)
    )
    assert ok is expected, (value, constraints, result)
    if ok:
        assert type(result) is int
        assert result == int(value)


def test_float_messages_name_variable_value_and_rule() -> None:
    spec = make_spec(float, min=0.0, max=2.0)
    with pytest.raises(errors.VariableValueError) as caught:
        validate(spec, 3.5, "temperature")
    assert str(caught.value) == "variable 'temperature': value 3.5 breaks rule max=2.0"
    assert caught.value.details == {"name": "temperature", "value": 3.5, "rule": "max=2.0"}
    with pytest.raises(errors.VariableTypeError, match="has type str, expected float"):
        validate(spec, "3.5", "temperature")
    with pytest.raises(errors.VariableValueError, match="finite"):
        validate(spec, 10**400, "temperature")


def test_an_int_too_long_for_repr_is_refused_with_its_size() -> None:
    huge = 10**5000  # over the 4300 digits Python converts to text
    with pytest.raises(errors.VariableValueError, match="<int of 16610 bits>") as caught:
        validate(make_spec(int), huge, "n")
    assert "64-bit signed range" in str(caught.value)
    with pytest.raises(errors.VariableValueError, match="<int of 16610 bits>"):
        validate(make_spec(float, max=1.0), huge, "f")
    with pytest.raises(errors.VariableValueError, match=r"\[<int of 16610 bits>\]"):
        validate(make_spec(list, max_length=0), [huge], "items")


# -- strings, choices, modules -----------------------------------------------------------------


@given(
    min_length=st.none() | st.integers(0, 5),
    max_length=st.none() | st.integers(0, 8),
    pattern=st.none() | st.sampled_from(["[a-z]*", "a.c", "\\d+", "(ab)+"]),
    value=st.text(alphabet="abc1d ", max_size=10) | ANYTHING,
)
def test_string_accepted_iff_length_and_full_pattern_match(
    min_length: int | None, max_length: int | None, pattern: str | None, value: Any
) -> None:
    assume(min_length is None or max_length is None or min_length <= max_length)
    constraints = {
        k: v
        for k, v in (("min_length", min_length), ("max_length", max_length), ("pattern", pattern))
        if v is not None
    }
    ok, result = accepts(make_spec(str, **constraints), value)
    expected = (
        isinstance(value, str)
        and (min_length is None or len(value) >= min_length)
        and (max_length is None or len(value) <= max_length)
        and (pattern is None or re.fullmatch(pattern, value) is not None)
    )
    assert ok is expected
    if ok:
        assert result == value


@given(
    choices=st.lists(
        st.one_of(st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 1.0]), st.text("ab")),
        min_size=1,
        max_size=5,
    ),
    value=st.one_of(st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 1.0]), st.text("ab")),
)
def test_choice_matches_by_value_and_boolean_kind(choices: list[Any], value: Any) -> None:
    spec = make_spec("choice", choices=choices)
    ok, result = accepts(spec, value)
    matches = [c for c in choices if c == value and isinstance(c, bool) is isinstance(value, bool)]
    assert ok is bool(matches)
    if ok:
        assert result is matches[0] or result == matches[0]
        assert type(result) is type(matches[0]), "canonical value is the declared choice"


def test_choice_refuses_unhashable_and_array_values() -> None:
    spec = make_spec(Choice("a", "b"))
    for value in ([1], {"a": 1}, np.array(["a"]), None):
        with pytest.raises(errors.VariableTypeError):
            validate(spec, value, "model")


def test_module_is_a_nonempty_name_with_optional_rules() -> None:
    spec = make_spec("module", pattern="[A-Z][A-Za-z]+")
    assert validate(spec, "ChainOfThought") == "ChainOfThought"
    with pytest.raises(errors.VariableValueError, match="pattern"):
        validate(spec, "chain")
    with pytest.raises(errors.VariableTypeError):
        validate(spec, "")
    with pytest.raises(errors.VariableTypeError):
        validate(spec, 3)


def test_boolean_is_strict() -> None:
    spec = make_spec(bool)
    assert validate(spec, True) is True
    for value in (1, 0, "true", None):
        with pytest.raises(errors.VariableTypeError):
            validate(spec, value)


# -- embedding and tensor ----------------------------------------------------------------------


@given(
    dims=st.integers(0, 5),
    values=st.lists(st.floats(-2, 2) | st.integers(-2, 2), max_size=6),
    bound=st.none() | st.floats(0.5, 2),
)
def test_embedding_accepted_iff_dimensions_and_bounds(
    dims: int, values: list[float], bound: float | None
) -> None:
    constraints: dict[str, Any] = {"dimensions": dims}
    if bound is not None:
        constraints.update(min=-bound, max=bound)
    spec = make_spec("embedding", **constraints)
    ok, result = accepts(spec, values)
    expected = len(values) == dims and (bound is None or all(abs(v) <= bound for v in values))
    assert ok is expected
    if ok:
        assert result == tuple(float(v) for v in values)
        assert all(type(v) is float for v in result)
        assert accepts(spec, np.array(values, dtype=np.float64))[0]


@given(
    shape=st.lists(st.integers(0, 3), max_size=3),
    want=st.lists(st.none() | st.integers(0, 3), max_size=3),
    dtype=st.sampled_from(["float32", "float64", "int8", "bool", "complex64"]),
)
def test_tensor_accepted_iff_shape_and_dtype_fit(
    shape: list[int], want: list[int | None], dtype: str
) -> None:
    spec = make_spec("tensor", shape=want, dtype="float32")
    value = np.zeros(shape, dtype=dtype)
    ok, result = accepts(spec, value)
    fits = len(want) == len(shape) and all(
        w is None or w == g for w, g in zip(want, shape, strict=False)
    )
    assert ok is (fits and dtype == "float32")
    if ok:
        assert result.dtype == np.float32
        assert result.shape == tuple(shape)
        assert not result.flags.writeable
        assert result is not value


def test_tensor_canonical_form_is_a_read_only_copy() -> None:
    source = np.arange(6, dtype=np.int32).reshape(2, 3)
    result = validate(make_spec("tensor"), source)
    source[0, 0] = 99
    assert result[0, 0] == 0
    with pytest.raises(ValueError, match="read-only"):
        result[0, 0] = 5
    with pytest.raises(ValueError):
        result.flags.writeable = True


@pytest.mark.parametrize(
    "value", [[[1, 2], [3]], ["a", "b"], [object()], "abc", 3.0, np.array([None, 1])]
)
def test_tensor_refuses_non_numeric_or_ragged_input(value: Any) -> None:
    with pytest.raises(errors.VariableTypeError):
        validate(make_spec("tensor"), value, "mask")


def test_tensor_from_nested_list_uses_declared_dtype() -> None:
    result = validate(make_spec("tensor", dtype="int16"), [[1, 2], [3, 4]])
    assert result.dtype == np.int16
    assert result.tolist() == [[1, 2], [3, 4]]


# -- json --------------------------------------------------------------------------------------


@given(value=JSON)
def test_json_canonical_form_is_the_json_round_trip_frozen(value: Any) -> None:
    spec = make_spec("json")
    result = validate(spec, value)
    assert result == json.loads(json.dumps(value))
    assert json.loads(json.dumps(result)) == result
    assert validate(spec, result) == result  # idempotent
    assert_frozen(result)


def assert_frozen(value: Any) -> None:
    if isinstance(value, dict):
        assert isinstance(value, FrozenDict)
        for item in value.values():
            assert_frozen(item)
    elif isinstance(value, list):
        assert isinstance(value, FrozenList)
        for item in value:
            assert_frozen(item)


JSON_NO_FLOATS = st.recursive(
    st.none() | st.booleans() | INT64 | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(value=JSON_NO_FLOATS, limit=st.integers(0, 60))
def test_json_max_length_counts_compact_json_text(value: Any, limit: int) -> None:
    # Without floats the canonical text is the compact one (numbers: tests/protocol).
    ok, _ = accepts(make_spec("json", max_length=limit), value)
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert ok is (len(compact) <= limit)


@pytest.mark.parametrize(
    "value", [{1, 2}, {"x": float("nan")}, {"x": float("inf")}, object(), {(1, 2): 3}, b"x"]
)
def test_json_refuses_values_json_cannot_carry(value: Any) -> None:
    with pytest.raises(errors.VariableTypeError, match="JSON"):
        validate(make_spec("json"), value, "demos")


def test_json_refuses_too_deep_nesting_cleanly() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(errors.VariableTypeError):
        validate(make_spec("json"), deep, "demos")


# -- frozen containers, records ----------------------------------------------------------------


def test_frozen_containers_refuse_every_mutation() -> None:
    frozen = freeze({"a": [1, {"b": 2}]})
    mutations = [
        lambda: frozen.__setitem__("x", 1),
        lambda: frozen.__delitem__("a"),
        lambda: frozen.update(x=1),
        lambda: frozen.setdefault("x", 1),
        lambda: frozen.pop("a"),
        frozen.popitem,
        frozen.clear,
        lambda: frozen["a"].append(3),
        lambda: frozen["a"].extend([3]),
        lambda: frozen["a"].insert(0, 3),
        lambda: frozen["a"].__setitem__(0, 3),
        frozen["a"].sort,
        frozen["a"].reverse,
        lambda: frozen["a"].remove(1),
        frozen["a"].pop,
        frozen["a"].clear,
        lambda: frozen["a"][1].__setitem__("b", 3),
    ]
    for mutate in mutations:
        with pytest.raises(TypeError, match="read-only"):
            mutate()
    items = frozen["a"]
    with pytest.raises(TypeError):
        items += [3]
    assert frozen == {"a": [1, {"b": 2}]}


def test_frozen_containers_copy_to_mutable_and_pickle_frozen() -> None:
    frozen = freeze({"a": [1, 2]})
    mutable = dict(frozen)
    mutable["b"] = 1
    assert frozen.copy() == {"a": [1, 2]}
    assert type(frozen.copy()) is dict
    assert type(list(frozen["a"])) is list
    for copied in (pickle.loads(pickle.dumps(frozen)), copy.deepcopy(frozen), copy.copy(frozen)):
        assert copied == frozen
        assert isinstance(copied, FrozenDict)
    assert json.dumps(frozen) == '{"a": [1, 2]}'


def test_records_and_updates_are_immutable_and_pickle() -> None:
    spec = make_spec("json")
    record = VariableRecord("demos", spec, validate(spec, [{"q": 1}]), 1, 1, 1.0, "w")
    with pytest.raises(AttributeError):
        record.value = []  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.metadata["x"] = 1  # type: ignore[index]
    update = VariableUpdate(1, "register", "demos", record)
    assert pickle.loads(pickle.dumps(update)) == update
    assert record.type == "json"
    assert record.constraints == {}
    info = SessionInfo("sid", 1.0, 3, 2, 2.0, None)
    assert pickle.loads(pickle.dumps(info)) == info
