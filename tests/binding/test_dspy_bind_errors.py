"""dspex.bind refuses bad input with dspex errors that name what is wrong; nothing is changed."""

from __future__ import annotations

import dspy
import numpy as np
import pytest
from dspy.utils import DummyLM
from support.binding import CallRecorder

import dspex
from dspex.errors import BindingError, SessionError, VariableNotFoundError

pytestmark = pytest.mark.timeout(60)

TEMPERATURE = dspex.Variable(float, 0.7, name="temperature")


def test_unknown_hook_names_the_hook_and_lists_valid_ones() -> None:
    with pytest.raises(BindingError) as caught:
        dspex.bind(dspy.Predict("q -> a"), temprature=TEMPERATURE)
    message = str(caught.value)
    assert "'temprature'" in message and "did you mean 'temperature'" in message
    for hook in ("instructions", "demos", "lm", "max_tokens", "config"):
        assert hook in message
    assert caught.value.hook == "temprature"
    assert isinstance(caught.value, TypeError)  # BindingError is also a TypeError


@pytest.mark.parametrize(
    ("hook", "variable", "needs"),
    [
        ("temperature", dspex.Variable(str, "hot", name="t"), "a number"),
        ("instructions", dspex.Variable(float, 0.5, name="i"), "a string"),
        ("max_tokens", dspex.Variable(float, 5.0, name="m"), "an integer"),
        ("max_tokens", dspex.Variable(dspex.Choice(1.5, 2.5), 1.5, name="m"), "an integer"),
        ("demos", dspex.Variable(str, "[]", name="d"), "a json value"),
        ("lm", dspex.Variable(dspex.Choice(1, 2), 1, name="m"), "a string"),
        ("logprobs", dspex.Variable(int, 1, name="l"), "a boolean"),
        ("top_p", dspex.Variable(np.ndarray, [0.5], name="p", shape=[1]), "a number"),
    ],
)
def test_type_that_does_not_fit_the_hook_is_refused_at_bind_time(
    hook: str, variable: dspex.Variable, needs: str
) -> None:
    with pytest.raises(BindingError) as caught:
        dspex.bind(dspy.Predict("q -> a"), **{hook: variable})
    assert f"hook {hook!r}" in str(caught.value) and needs in str(caught.value)
    assert repr(variable.name) in str(caught.value)


def test_fitting_types_are_accepted() -> None:
    dspex.bind(
        dspy.Predict("q -> a"),
        temperature=dspex.Variable(int, 1, name="t"),  # an integer is a number
        max_tokens=dspex.Variable(dspex.Choice(64, 128), 64, name="m"),
        stop=dspex.Variable(list, ["\n"], name="s"),
        lm=dspex.Variable(str, "dspex/sim", name="model"),
    )


@pytest.mark.parametrize("target", [0.7, None, "", 3])
def test_a_value_instead_of_a_variable_is_refused(target: object) -> None:
    with pytest.raises(BindingError, match=r"must be a dspex\.Variable or a variable name"):
        dspex.bind(dspy.Predict("q -> a"), temperature=target)


def test_non_module_and_empty_bindings_are_refused() -> None:
    with pytest.raises(BindingError, match=r"needs a dspy\.Module"):
        dspex.bind(lambda question: question, temperature=TEMPERATURE)
    with pytest.raises(BindingError, match="no bindings"):
        dspex.bind(dspy.Predict("q -> a"))
    with pytest.raises(BindingError, match="config= takes a non-empty mapping"):
        dspex.bind(dspy.Predict("q -> a"), config=TEMPERATURE)
    with pytest.raises(BindingError, match="bind 'lm' directly"):
        dspex.bind(dspy.Predict("q -> a"), config={"lm": "model"})
    with pytest.raises(BindingError, match="has no name"):
        dspex.bind(dspy.Predict("q -> a"), temperature=dspex.Variable(float, 0.1))


def test_name_bound_variable_with_wrong_type_refused_at_bind_or_call_time() -> None:
    with dspex.Session() as session:
        session.register("hot", str, "very")
        with pytest.raises(BindingError, match="does not fit hook 'temperature'"):
            dspex.bind(dspy.Predict("q -> a"), temperature="hot")
        late = dspex.bind(dspy.Predict("q -> a"), temperature="later")  # not registered yet
        session.register("later", str, "also a string")
        lm = DummyLM({"": {"a": "x"}})
        with dspy.context(lm=lm), pytest.raises(BindingError, match="'later' has type 'string'"):
            late(q="x")
        assert lm.history == []  # refused before anything reached the LM


def test_unknown_variable_name_at_call_time_is_a_clear_error() -> None:
    bound = dspex.bind(dspy.Predict("q -> a"), temperature="temp")
    with dspex.Session() as session:
        lm = DummyLM({"": {"a": "x"}})
        with dspy.context(lm=lm), pytest.raises(VariableNotFoundError) as caught:
            bound(q="x")
        message = str(caught.value)
        assert "'temperature'" in message and "'temp'" in message
        assert session.session_id in message and "register" in message
        assert lm.history == []


def test_declared_variable_is_registered_on_first_use(recorder: CallRecorder) -> None:
    bound = dspex.bind(dspy.Predict("q -> a"), temperature=TEMPERATURE)
    with dspex.Session() as session:
        with dspy.context(lm=DummyLM({"": {"a": "x"}}), callbacks=[recorder]):
            bound(q="x")
        assert session.get("temperature") == 0.7
        assert recorder.calls[-1].kwargs["temperature"] == 0.7


def test_call_without_session_says_how_to_fix_it() -> None:
    bound = dspex.bind(dspy.Predict("q -> a"), temperature=TEMPERATURE)
    with dspy.context(lm=DummyLM({"": {"a": "x"}})), pytest.raises(SessionError, match="Session"):
        bound(q="x")


def test_bad_demos_value_and_bad_model_name_fail_at_call_time() -> None:
    with dspex.Session() as session:
        session.register("demos", dict, {"not": "a list"})
        session.register("numbers", list, [1, 2])
        session.register("model", str, "openai/")
        lm = DummyLM({"": {"a": "x"}})
        with dspy.context(lm=lm):
            with pytest.raises(BindingError, match="holds an object; demos must be a JSON array"):
                dspex.bind(dspy.Predict("q -> a"), demos="demos")(q="x")
            with pytest.raises(BindingError, match="holds an array whose items are not all") as e:
                dspex.bind(dspy.Predict("q -> a"), demos="numbers")(q="x")
            assert "Frozen" not in str(e.value)  # no internal type names in the message
            with pytest.raises(BindingError, match="'openai/' cannot be turned into an LM"):
                dspex.bind(dspy.Predict("q -> a"), lm="model")(q="x")
        assert lm.history == []
