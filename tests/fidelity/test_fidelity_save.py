"""Save and load keep bound variables; bind leaves parameter names as they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dspy
import pytest
from support.fidelity import Env

import dspex

pytestmark = pytest.mark.timeout(60)

TEMPERATURE = dspex.Variable(float, 0.2, name="s_temperature", min=0.0, max=2.0)
INSTRUCTIONS = dspex.Variable(str, "Answer briefly.", name="s_instructions")


class Support(dspex.Program):
    """A dspex Program whose predictor is bound."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.bind(dspy.Predict("question -> answer"), temperature=TEMPERATURE)

    def forward(self, question: str) -> Any:
        return self.answer(question=question)


class Plain(dspy.Module):
    """A plain dspy.Module; ``bound=True`` binds its predictor (the same names either way)."""

    def __init__(self, bound: bool) -> None:
        super().__init__()
        answer = dspy.ChainOfThought("question -> answer")
        if bound:
            answer = dspex.bind(answer, temperature=TEMPERATURE, instructions=INSTRUCTIONS)
        self.answer = answer

    def forward(self, question: str) -> Any:
        return self.answer(question=question)


def temperature_sent(make: Any) -> str:
    env = Env.fresh()
    dspy.configure(lm=env.lm, callbacks=[env.recorder])
    make()(question="What is 2 + 2?")
    return dict(env.recorder.requests[-1].kwargs)["temperature"]


MAKERS = {
    "program": Support,
    "bound module": lambda: Plain(bound=True).answer,
    "plain module": lambda: Plain(bound=True),
}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_save_program_and_dspy_load_keep_the_values(tmp_path: Path, kind: str) -> None:
    """Defect 5: after save(save_program=True) and dspy.load the LM got the default 0.2."""
    with dspex.Session() as session:
        program = MAKERS[kind]()
        session.set("s_temperature", 0.33)
        program.save(tmp_path / "saved", save_program=True)
    with dspex.Session():
        loaded = dspy.load(tmp_path / "saved", allow_pickle=True)
        assert temperature_sent(lambda: loaded) == "0.33"


def test_dspy_load_outside_a_session_applies_the_values_on_the_first_call(tmp_path: Path) -> None:
    with dspex.Session() as session:
        program = Support()
        session.set("s_temperature", 0.44)
        program.save(tmp_path / "saved", save_program=True)
    loaded = dspy.load(tmp_path / "saved", allow_pickle=True)
    with dspex.Session():
        assert temperature_sent(lambda: loaded) == "0.44"


def test_a_loaded_plain_module_keeps_the_values_a_session_already_has(tmp_path: Path) -> None:
    """Pickled values only fill a session that lacks the variables (as Remote workers join)."""
    with dspex.Session() as session:
        program = Plain(bound=True)
        session.set("s_temperature", 0.33)
        program.save(tmp_path / "saved", save_program=True)
    with dspex.Session() as session:
        session.register("s_temperature", float, 0.6, min=0.0, max=2.0)
        loaded = dspy.load(tmp_path / "saved", allow_pickle=True)
        assert temperature_sent(lambda: loaded) == "0.6"


def test_a_plain_module_containing_a_bind_saves_and_loads_its_variables(tmp_path: Path) -> None:
    """Defect 5: a plain dspy.Module containing bind(...) saved no variables at all."""
    with dspex.Session() as session:
        program = Plain(bound=True)
        session.update({"s_temperature": 0.55, "s_instructions": "Saved text."})
        program.save(tmp_path / "plain.json")
    with dspex.Session() as session:
        fresh = Plain(bound=True)
        fresh.load(tmp_path / "plain.json")
        assert session.get("s_instructions") == "Saved text."
        assert temperature_sent(lambda: fresh) == "0.55"


def test_bind_keeps_parameter_names_so_saves_from_before_bind_load(tmp_path: Path) -> None:
    """Defect 6: bind renamed `answer` to `answer.module`; old saves failed with KeyError."""
    before = Plain(bound=False)
    before.answer.predict.demos = [dspy.Example(question="q", answer="a")]
    before.save(tmp_path / "before.json")
    with dspex.Session():
        after = Plain(bound=True)
        assert [n for n, _ in after.named_parameters()] == [
            n for n, _ in before.named_parameters()
        ]
        assert [n for n, _ in after.named_predictors()] == ["answer.predict"]
        after.load(tmp_path / "before.json")
        assert after.answer.predict.demos == [{"question": "q", "answer": "a"}]
    saved = json.loads((tmp_path / "before.json").read_text())
    assert set(saved) == {"answer.predict", "metadata"}
