"""A bad ``demos`` value names the variable and the expected shape, never an internal type."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dspy
import pytest

import dspex
from dspex.errors import BindingError, VariableTypeError


@pytest.fixture(autouse=True)
def _clean_dspy(clean_dspy_settings: None) -> Iterator[None]:
    """Clean DSPy settings and no current session around each test."""
    yield


@pytest.mark.parametrize(
    "value",
    [
        ["What is 2 + 2?", "4"],
        {"question": "What is 2 + 2?", "answer": "4"},
        [{"question": "q", "answer": "a"}, ["q", "a"]],
    ],
    ids=["list-of-strings", "object", "one-item-a-list"],
)
def test_a_bad_demos_value_names_the_variable_and_the_shape(value: Any) -> None:
    examples = dspex.Variable(list, [], name="examples")
    qa = dspex.bind(dspy.Predict("question -> answer"), demos=examples)
    dspy.configure(lm=dspex.SimLM("dspex/sim"))
    with dspex.Session() as session:
        examples.register()
        session.set("examples", value)
        with pytest.raises(BindingError) as caught:
            qa(question="What is 3 + 3?")
    message = str(caught.value)
    assert "variable 'examples' is bound to 'demos' but holds " in message
    assert "demos must be a JSON" in message and "of objects" in message  # the expected shape
    assert "[{'question': '...', 'answer': '...'}]" in message
    assert "Frozen" not in message  # never the store's internal read-only containers


def test_a_stored_list_set_into_a_string_variable_is_named_list() -> None:
    with dspex.Session() as session:
        session.register("demos", list, [{"question": "q"}])
        session.register("instructions", str, "Be brief.")
        with pytest.raises(VariableTypeError) as caught:
            session.set("instructions", session.get("demos"))
    assert "has type list" in str(caught.value)
    assert "Frozen" not in str(caught.value)
