"""Program declarations: a clash between two classes, and assigning a declared variable."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import dspy
import pytest

import dspex
from dspex.errors import VariableAssignmentError, VariableExistsError


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> Iterator[None]:
    """Clean DSPy settings and no current session around each test."""
    yield


def _program(name: str, variable: dspex.Variable) -> type[dspex.Program]:
    """A Program class called ``name`` declaring ``variable`` as ``temperature``, bound."""

    class Bound(dspex.Program):
        temperature = variable

        def __init__(self) -> None:
            super().__init__()
            self.answer = dspex.bind(dspy.Predict("question -> answer"), temperature=variable)

        def forward(self, question: str) -> Any:
            return self.answer(question=question)

    return type(name, (Bound,), {})


def test_two_classes_with_different_defaults_is_an_error_naming_both() -> None:
    Cautious = _program("Cautious", dspex.Variable(float, 0.2, min=0.0, max=2.0))
    Creative = _program("Creative", dspex.Variable(float, 1.3, min=0.0, max=2.0))
    with dspex.Session() as session:
        Cautious()
        with pytest.raises(VariableExistsError) as caught:
            Creative()
        message = str(caught.value)
        assert "Cautious" in message and "Creative" in message
        assert "'temperature'" in message and "0.2 vs 1.3" in message
        assert session.get("temperature") == 0.2  # nothing of Creative was applied


def test_two_classes_with_different_specs_is_an_error_naming_both() -> None:
    Narrow = _program("Narrow", dspex.Variable(float, 0.5, min=0.0, max=1.0))
    Wide = _program("Wide", dspex.Variable(float, 0.5, min=0.0, max=2.0))
    with dspex.Session():
        Wide()
        with pytest.raises(VariableExistsError, match=r"Wide.*Narrow.*max=2\.0\) vs .*max=1\.0"):
            Narrow()


def test_a_clash_found_at_the_first_call_when_built_outside_the_session() -> None:
    First = _program("First", dspex.Variable(float, 0.2))
    Second = _program("Second", dspex.Variable(float, 0.9))
    first, second = First(), Second()
    dspy.configure(lm=dspex.SimLM("dspex/sim"))
    with dspex.Session():
        first(question="What is 1 + 1?")
        with pytest.raises(VariableExistsError, match=r"First.*Second"):
            second(question="What is 1 + 1?")


def test_the_same_declaration_in_two_classes_stays_fine() -> None:
    One = _program("One", dspex.Variable(float, 0.4, min=0.0, max=2.0, description="a"))
    Two = _program("Two", dspex.Variable(float, 0.4, min=0.0, max=2.0, description="b"))
    with dspex.Session() as session:
        One()
        Two()
        session.set("temperature", 0.8)
        One()
        assert session.get("temperature") == 0.8


def test_separate_sessions_do_not_clash() -> None:
    Cautious = _program("Cautious", dspex.Variable(float, 0.2))
    Creative = _program("Creative", dspex.Variable(float, 1.3))
    with dspex.Session() as first:
        Cautious()
    with dspex.Session() as second:
        Creative()
        assert second.get("temperature") == 1.3
    assert first.closed


def test_assigning_a_declared_variable_on_an_instance_raises() -> None:
    Support = _program("Support", dspex.Variable(float, 0.7, min=0.0, max=2.0))
    with dspex.Session() as session:
        program = Support()
        with pytest.raises(VariableAssignmentError) as caught:
            program.temperature = 1.9
        assert isinstance(caught.value, AttributeError)
        assert caught.value.name == "temperature"
        assert caught.value.attribute == "temperature"
        assert "session.set('temperature', value)" in str(caught.value)
        assert session.get("temperature") == 0.7  # nothing changed, nothing shadowed
        assert program.temperature is Support.temperature
        with pytest.raises(VariableAssignmentError, match="deleted"):
            del program.temperature
        program.other = 1.9  # any other attribute is a plain attribute
        assert program.other == 1.9


def test_a_variable_named_apart_from_its_attribute_is_refused_by_attribute() -> None:
    class Named(dspex.Program):
        temp = dspex.Variable(float, 0.7, name="answer_temperature")

    program = Named()
    with pytest.raises(VariableAssignmentError, match=r"session.set\('answer_temperature'"):
        program.temp = 0.1  # type: ignore[assignment]


def test_the_assignment_error_pickles_with_its_details() -> None:
    error = VariableAssignmentError("no", attribute="temperature", name="temperature")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is VariableAssignmentError and copy.name == "temperature"
    assert copy.code == "variable_assignment"
