"""A new user's mistakes with ``dspex.tune`` are TuningErrors that name the variable (or the
metric) and say what to give instead, and leave the session as it was: bounds that are not
numbers, an empty candidate list, one name given as a string, a metric that returns text."""

from __future__ import annotations

import dspy
import optuna
import pytest
import tune_targets as targets

import dspex
from dspex.errors import TuningError

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"temperature": ("a", "b")},
            r"variable 'temperature' \(float\): search space \('a', 'b'\)",
        ),
        (
            {"top_k": ["many", "few"]},
            r"variable 'top_k' \(integer\): search space \['many', 'few'\]",
        ),
        ({"style": []}, r"variable 'style' \(choice\): search space \[\] not understood"),
    ],
)
def test_a_space_optuna_cannot_build_is_a_tuning_error_naming_the_variable(
    session: dspex.Session, space: dict[str, object], message: str
) -> None:
    before = {name: session.variable(name) for name in ("temperature", "top_k", "style")}
    with pytest.raises(TuningError, match=message):
        dspex.tune(
            targets.ReadValues(), targets.devset(2), targets.peak,
            variables=("temperature", "top_k", "style"), space=space, n_trials=2,
        )  # fmt: skip
    assert {name: session.variable(name) for name in before} == before  # nothing written


def test_one_variable_given_as_a_string_says_how_to_write_it(session: dspex.Session) -> None:
    with pytest.raises(TuningError, match=r"not the string 'temperature'; write "):
        dspex.tune(
            targets.ReadValues(), targets.devset(1), targets.peak,
            variables="temperature", n_trials=1,
        )  # fmt: skip


def test_a_metric_returning_text_is_named_and_the_session_is_restored(
    session: dspex.Session,
) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with pytest.raises(
        TuningError, match=r"the metric returned 'good' \(str\) for dev set example 0"
    ):
        dspex.tune(
            targets.ReadValues(), targets.devset(2), lambda example, prediction: "good",
            variables=("temperature",), n_trials=2,
        )  # fmt: skip
    assert session.get("temperature") == 0.7
    assert session.variable("temperature").lock is None


def test_compile_given_a_teleprompter_class_says_to_configure_one(session: dspex.Session) -> None:
    qa = dspex.bind(
        dspy.Predict("question -> answer"), demos=dspex.Variable(list, [], name="demos")
    )
    with pytest.raises(TuningError, match=r"got the class LabeledFewShot; create one with its"):
        dspex.compile(qa, dspy.LabeledFewShot, trainset=targets.devset(2))
    assert session.get("demos") == []
