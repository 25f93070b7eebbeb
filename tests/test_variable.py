"""dspex.Variable: a frozen, deep-copyable, picklable declaration resolved in the session."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import cloudpickle
import numpy as np
import pytest

import dspex
from dspex import errors


class Tunables:
    """Variables declared as class attributes take the attribute name."""

    temperature = dspex.Variable(float, 0.7, min=0.0, max=2.0, description="sampling")
    instructions = dspex.Variable(str, "Answer in one sentence.", max_length=200)
    model = dspex.Variable(dspex.Choice("dspex/sim", "openai/gpt-4o-mini"), "dspex/sim")
    renamed = dspex.Variable(int, 3, name="max_hops")
    mask = dspex.Variable("tensor", np.eye(2, dtype=np.float32), shape=[2, 2], dtype="float32")
    demos = dspex.Variable("json", [{"question": "2+2?", "answer": "4"}])


ALL = [
    Tunables.temperature,
    Tunables.instructions,
    Tunables.model,
    Tunables.renamed,
    Tunables.mask,
    Tunables.demos,
]


def test_set_name_takes_the_attribute_name_unless_given() -> None:
    assert Tunables.temperature.name == "temperature"
    assert Tunables.instructions.name == "instructions"
    assert Tunables.renamed.name == "max_hops"


def test_spec_and_default_are_canonical() -> None:
    assert Tunables.temperature.spec == dspex.VariableSpec("float", {"min": 0.0, "max": 2.0})
    assert Tunables.model.spec.type == "choice"
    assert dspex.Variable(float, 1).default == 1.0
    assert type(dspex.Variable(float, 1).default) is float
    assert not Tunables.mask.default.flags.writeable


def test_variables_are_frozen() -> None:
    variable = Tunables.temperature
    with pytest.raises(dataclasses.FrozenInstanceError):
        variable.default = 0.1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        variable.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        variable.constraints["max"] = 9.0  # type: ignore[index]
    with pytest.raises(TypeError):
        Tunables.demos.default[0]["answer"] = "5"
    with pytest.raises(ValueError, match="read-only"):
        Tunables.mask.default[0, 0] = 5.0


@pytest.mark.parametrize("variable", ALL, ids=lambda v: v.name)
def test_deepcopy_and_copy_give_an_equal_variable(variable: dspex.Variable) -> None:
    assert copy.deepcopy(variable) == variable
    assert copy.copy(variable) == variable
    assert copy.deepcopy({"v": variable})["v"] == variable


@pytest.mark.parametrize("variable", ALL, ids=lambda v: v.name)
@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_pickle_round_trip_keeps_an_immutable_equal_variable(
    variable: dspex.Variable, dumps: Any
) -> None:
    copied = pickle.loads(dumps(variable))
    assert copied == variable
    assert hash(copied) == hash(variable)
    assert copied.name == variable.name
    if isinstance(copied.default, np.ndarray):
        assert not copied.default.flags.writeable


def test_cloudpickle_ships_a_class_defined_in_a_function() -> None:
    def make() -> type:
        class Local:
            temperature = dspex.Variable(float, 0.3, max=1.0)

        return Local

    shipped = pickle.loads(cloudpickle.dumps(make()))
    assert shipped.temperature.name == "temperature"
    assert shipped.temperature.default == 0.3


def test_equality_and_hash() -> None:
    first = dspex.Variable(float, 0.5, name="t", max=1.0)
    second = dspex.Variable(float, 0.5, name="t", max=1.0)
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    assert first != dspex.Variable(float, 0.6, name="t", max=1.0)
    assert first != dspex.Variable(float, 0.5, name="t", max=2.0)
    assert first != dspex.Variable(float, 0.5, name="u", max=1.0)
    tensor = dspex.Variable("tensor", np.zeros(2), name="m")
    assert tensor == dspex.Variable("tensor", np.zeros(2), name="m")
    assert tensor != dspex.Variable("tensor", np.ones(2), name="m")
    assert first != "t"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((float, 3.5), {"max": 2.0}, errors.VariableValueError, r"3\.5.*max=2\.0"),
        ((float, "hot"), {}, errors.VariableTypeError, "expected float"),
        ((int, 1.5), {}, errors.VariableTypeError, "expected integer"),
        ((str, "x"), {"pattern": "("}, errors.PatternError, "pattern"),
        ((float, 0.5), {"min": 1.0, "max": 0.0}, errors.ConstraintError, "greater than"),
        ((float, 0.5), {"max_length": 3}, errors.ConstraintError, "do not apply"),
        ((complex, 1j), {}, errors.ConstraintError, "unknown variable type"),
        ((dspex.Choice("a", "b"), "c"), {}, errors.VariableValueError, "choices"),
    ],
)
def test_bad_declarations_raise_clear_errors(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        dspex.Variable(*args, **kwargs)


def test_default_error_names_the_variable_when_named() -> None:
    with pytest.raises(errors.VariableValueError, match="'temperature'"):
        dspex.Variable(float, 9.0, name="temperature", max=2.0)


def test_register_get_set_in_the_current_session() -> None:
    with dspex.Session() as session:
        record = Tunables.temperature.register()
        assert (record.name, record.value, record.version) == ("temperature", 0.7, 1)
        assert record.metadata == {"description": "sampling"}
        assert Tunables.temperature.get() == 0.7
        assert Tunables.temperature.set(0.2).version == 2
        assert session.get("temperature") == 0.2
        assert Tunables.temperature.register().value == 0.2  # keeps the existing value
        with pytest.raises(errors.VariableValueError):
            Tunables.temperature.set(5.0)
        with pytest.raises(errors.VersionConflictError):
            Tunables.temperature.set(0.3, expected_version=1)


def test_using_a_variable_without_a_session_raises() -> None:
    with pytest.raises(errors.SessionError):
        Tunables.temperature.get()
