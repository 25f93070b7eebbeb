"""Differential cases, round 3: copies of a bound program and values changed after copying.

``deepcopy()``, ``reset_copy()`` and optimizers' copies keep the hooks: a copy reads the session's
variables on every call like the original, except for what was assigned on it (``reset_copy()``
clears demos, an optimizer installs compiled demos), which wins as a value set on a predictor
wins in plain DSPy. The oracle for "values changed after copying" is plain DSPy run with the new
values (and the assigned ones) from the start.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import dspy
import pytest
from support.fidelity import (
    INSTRUCTIONS,
    SIGNATURE,
    VARIABLES,
    Drive,
    Env,
    Request,
    Values,
    assert_requests_equal,
    assert_same,
    question,
    run_bound,
    run_plain,
)

import dspex
from dspex.binding import BoundModule
from dspex.sim import answer_match, load_devset

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:a bound predictor holds"),
]

TRAIN = load_devset("arithmetic")[:3]
LATER = Values(temperature=0.7, max_tokens=55, instructions="Reply with a number or a name.")


def ask(program: dspy.Module, env: Env) -> None:
    for i in range(2):
        program(question=question(i))


def build(sig: Any, bind: Any) -> dspy.Module:
    return bind(dspy.ChainOfThought(sig))


def set_values(values: Values) -> None:
    """Set ``values`` in the current session (the variables the harness binds)."""
    session = dspex.current_session()
    names = {h: v.name for h, v in VARIABLES.items() if getattr(values, h) is not None}
    session.update({name: getattr(values, h) for h, name in names.items()}, atomic=True)


def assert_runs_as_plain(later: Values, drive: Drive, plain_drive: Drive = ask) -> list[Request]:
    """Bound: ``drive`` from the default values V (it sets ``later`` itself); plain:
    ``plain_drive`` with ``later`` configured from the start. Returns the plain requests."""
    plain = run_plain(build, plain_drive, later).recorder.requests
    bound = run_bound(build, drive, Values()).recorder.requests
    assert_requests_equal(plain, bound)
    return plain


COPIES: dict[str, Callable[[dspy.Module], dspy.Module]] = {
    "deepcopy()": lambda program: program.deepcopy(),
    "copy.deepcopy": copy.deepcopy,
    "reset_copy()": lambda program: program.reset_copy(),
}


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
@pytest.mark.parametrize("how", list(COPIES))
def test_a_copy_runs_like_the_original(how: str, values: Values) -> None:
    """A copy sends what the same copy of the plain program sends (``reset_copy()`` clears the
    demos in both)."""
    make = COPIES[how]
    requests = assert_same(build, lambda program, env: ask(make(program), env), values)
    demos = sum(role == "assistant" for role, _ in requests[0].messages)
    assert demos == (0 if how == "reset_copy()" else 2)


@pytest.mark.parametrize("how", list(COPIES))
def test_a_copy_follows_values_set_after_copying(how: str) -> None:
    """Values set in the session after copying reach the copy; demos cleared by
    ``reset_copy()`` stay cleared (assigned on the copy, as in plain DSPy)."""
    make = COPIES[how]
    later = replace(LATER, demos=[] if how == "reset_copy()" else list(LATER.demos or []))

    def drive(program: dspy.Module, env: Env) -> None:
        made = make(program)
        set_values(LATER)
        ask(made, env)

    plain = assert_runs_as_plain(later, drive)
    assert dict(plain[0].kwargs)["temperature"] == "0.7"


def test_copies_keep_names_and_state() -> None:
    """``named_predictors()`` and ``dump_state()`` of a copy are those of the original."""
    with dspex.Session():
        program = build(dspy.Signature("question -> answer"), lambda m: dspex.bind(m, **VARIABLES))
        names = [name for name, _ in program.named_predictors()]
        state = program.dump_state()
        for make in COPIES.values():
            made = make(program)
            assert [name for name, _ in made.named_predictors()] == names
            made_state = made.dump_state()
            if make is COPIES["reset_copy()"]:
                assert made_state["predict"]["demos"] == []
                made_state["predict"]["demos"] = state["predict"]["demos"]
            assert made_state == state
    assert names == [
        name for name, _ in dspy.ChainOfThought("question -> answer").named_predictors()
    ]


def labeled(program: dspy.Module) -> dspy.Module:
    return dspy.LabeledFewShot(k=2).compile(program, trainset=TRAIN, sample=False)


def test_an_optimizers_copy_follows_the_variables_it_did_not_compile() -> None:
    """LabeledFewShot compiles demos onto its copy: values set afterwards reach the compiled
    program, except the demos, which stay the compiled ones (until ``dspex.publish``)."""
    compiled_demos = [dict(e) for e in TRAIN[:2]]
    later = replace(LATER, demos=compiled_demos)

    def drive(program: dspy.Module, env: Env) -> None:
        compiled = labeled(program)
        set_values(LATER)
        ask(compiled, env)

    plain = assert_runs_as_plain(later, drive, lambda program, env: ask(labeled(program), env))
    assert TRAIN[0].question in plain[0].messages[1][1]


def test_an_optimizers_copy_follows_published_demos() -> None:
    """After ``dspex.publish(compiled)`` the compiled copy follows the demos variable again."""

    def drive(program: dspy.Module, env: Env) -> None:
        compiled = labeled(program)
        dspex.publish(compiled)
        set_values(LATER)
        ask(compiled, env)

    assert_runs_as_plain(LATER, drive)


def test_load_state_of_a_plain_programs_state() -> None:
    """A bound program that loads a plain program's state runs what the plain program runs
    (the loaded instructions and demos were assigned, so they win)."""
    saved = Values(instructions="Give only the final answer.", demos=[dict(TRAIN[0])])

    def state() -> Any:
        sig = dspy.Signature("question -> answer", saved.instructions)
        program = dspy.ChainOfThought(sig)
        program.predict.demos = list(saved.demos or [])
        return program.dump_state()

    def drive(program: dspy.Module, env: Env) -> None:
        program.load_state(state())
        ask(program, env)

    assert_runs_as_plain(
        replace(Values(), instructions=saved.instructions, demos=saved.demos), drive
    )


def test_update_config_on_a_bound_predictor() -> None:
    """``predictor.update_config(...)`` adds call keywords that win over the bound ones, as
    a predictor's config wins over the context LM's keywords in DSPy."""

    def drive(program: dspy.Module, env: Env) -> None:
        for predictor in program.predictors():
            predictor.update_config(temperature=0.05, top_p=0.5)
        ask(program, env)

    requests = assert_same(build, drive)
    assert {(dict(r.kwargs)["temperature"], dict(r.kwargs)["top_p"]) for r in requests} == {
        ("0.05", "0.5")
    }


# ------------------------------------------------------------------------------------------
# saved state read by plain DSPy

NO_KEYWORDS = Values(temperature=None, max_tokens=None)


@pytest.mark.parametrize("compiled", [False, True], ids=["values", "compiled demos"])
def test_a_saved_bound_program_loads_into_plain_dspy(tmp_path: Path, compiled: bool) -> None:
    """The JSON state of a bound program, loaded into the same program in plain DSPy (no
    dspex), runs what the bound program ran, as a plain program's state does: the bound (or
    compiled) instructions and demos are in DSPy's own fields. DSPy's state keeps no LM
    keywords (``config``), plain or bound."""
    runs: list[list[Any]] = []

    def drive(program: dspy.Module, env: Env) -> None:
        if compiled:
            program = labeled(program)
        path = tmp_path / f"{len(runs)}.json"
        program.save(path)
        fresh = dspy.ChainOfThought(SIGNATURE)
        fresh.load(path)
        runs.append([fresh.predict.signature.instructions, list(fresh.predict.demos)])
        ask(fresh, env)

    requests = assert_same(build, drive, NO_KEYWORDS)
    assert runs[0] == runs[1]
    assert runs[0][0] == INSTRUCTIONS
    demos = sum(role == "assistant" for role, _ in requests[0].messages)
    assert demos == 2


def test_a_loaded_save_follows_the_variables_again(tmp_path: Path) -> None:
    """Loading a bound program's save into a bound program: the saved values go to the
    session and the predictors follow the variables (later values reach them), instead of
    the saved instructions and demos being held as assigned."""

    def drive(program: dspy.Module, env: Env) -> None:
        program.save(tmp_path / "bound.json")
        program.load(tmp_path / "bound.json")
        set_values(LATER)
        ask(program, env)

    assert_runs_as_plain(LATER, drive)


def test_a_bootstrapped_copy_follows_later_values_and_keeps_its_demos() -> None:
    """BootstrapFewShot compiles with the values V (its rounds send what plain DSPy sends), and
    its compiled copy then follows values set later (instructions, LM keywords) and keeps the
    demos it bootstrapped, as the plain compiled program does when those values are set on it."""

    def drive(program: dspy.Module, env: Env) -> None:
        teleprompter = dspy.BootstrapFewShot(
            metric=answer_match, max_bootstrapped_demos=2, max_labeled_demos=0
        )
        compiled = teleprompter.compile(program, trainset=TRAIN)
        if isinstance(program, BoundModule):
            set_values(LATER)
            ask(compiled, env)
            return
        for predictor in compiled.predictors():
            predictor.signature = predictor.signature.with_instructions(LATER.instructions)
        with dspy.context(lm=env.lm.copy(**LATER.config())):
            ask(compiled, env)

    requests = assert_same(build, drive)
    assert dict(requests[-1].kwargs)["temperature"] == "0.7"
    assert LATER.instructions in requests[-1].messages[0][1]
    assert sum(role == "assistant" for role, _ in requests[-1].messages) >= 1


def test_saving_does_not_resolve_the_bound_lm(tmp_path: Path) -> None:
    """The bound LM is chosen per call and not saved: a save needs no usable model name (this
    one is not; a call would raise BindingError), and the state's ``lm`` is the predictor's own,
    as in the same plain program."""
    model = dspex.Variable(str, "no model name", name="c_model")
    with dspex.Session():
        program = dspex.bind(dspy.ChainOfThought(SIGNATURE), lm=model, **VARIABLES)
        program.save(tmp_path / "bound.json")
        with pytest.raises(dspex.errors.BindingError, match="no model name"):
            program(question=question(0))
    assert program.dump_state()["predict"]["lm"] is None


class Answerer(dspex.Program):
    """A dspex.Program whose ChainOfThought is bound to the harness variables."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.bind(dspy.ChainOfThought(SIGNATURE), **VARIABLES)

    def forward(self, question: str) -> Any:
        return self.answer(question=question)


def test_a_program_save_loads_into_plain_dspy_and_back(tmp_path: Path) -> None:
    """A dspex.Program's JSON save: plain DSPy loading it into the same modules runs what the
    program ran (instructions and demos; DSPy keeps no LM keywords), and a Program loading it
    sets the values in the session and keeps following the variables."""
    runs: list[Any] = []

    class Plain(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.answer = dspy.ChainOfThought(SIGNATURE)

        def forward(self, question: str) -> Any:
            return self.answer(question=question)

    def drive(program: dspy.Module, env: Env) -> None:
        path = tmp_path / f"{len(runs)}.json"
        program.save(path)
        fresh = Plain()
        fresh.load(path)
        runs.append(fresh.answer.predict.signature.instructions)
        ask(fresh, env)

    def build_program(sig: Any, bind: Any) -> dspy.Module:
        if isinstance(bind(dspy.Predict(sig)), BoundModule):  # the bound run
            return Answerer()
        program = Plain()
        program.answer = build(sig, bind)  # the plain run's values
        return program

    assert_same(build_program, drive, NO_KEYWORDS)
    assert runs == [INSTRUCTIONS, INSTRUCTIONS]

    def reload(program: dspy.Module, env: Env) -> None:
        program.save(tmp_path / "program.json")
        loaded = Answerer()
        loaded.load(tmp_path / "program.json")
        set_values(LATER)
        ask(loaded, env)

    plain = run_plain(build, ask, LATER).recorder.requests
    bound = run_bound(lambda sig, bind: Answerer(), reload, Values()).recorder.requests
    assert_requests_equal(plain, bound)


def test_a_demos_value_that_is_not_demos_does_not_stop_a_save(tmp_path: Path) -> None:
    """A save succeeds as in plain DSPy (and as before bound values were saved in DSPy's
    fields) while the demos variable holds something a call rejects: DSPy's demos field keeps
    the predictor's own demos, the section keeps the value, and the call still raises."""
    demos = dspex.Variable(list, [], name="c_demos")
    with dspex.Session() as session:
        program = dspex.bind(dspy.Predict(SIGNATURE), demos=demos)
        session.update({demos.name: [1, 2]})
        program.save(tmp_path / "bound.json")
        state = program.dump_state()
        with pytest.raises(dspex.errors.BindingError, match="c_demos"):
            program(question=question(0))
    assert (state["demos"], state["dspex_variables"][demos.name]["value"]) == ([], [1, 2])
    plain = dspy.Predict(SIGNATURE)
    plain.load(tmp_path / "bound.json")
    assert plain.demos == []
