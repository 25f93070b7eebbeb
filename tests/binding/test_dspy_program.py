"""dspex.Program: declared variables, registration, and save/load of bound values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cloudpickle
import dspy
import pytest
from support.binding import CallRecorder, objective

import dspex
from dspex.errors import SessionError, VariableExistsError

pytestmark = pytest.mark.timeout(60)


class Support(dspex.Program):
    temperature = dspex.Variable(float, 0.7, min=0.0, max=2.0)
    instructions = dspex.Variable(str, "Answer in one sentence.")
    model = dspex.Variable(dspex.Choice("dspex/sim", "dspex/sim-large"), "dspex/sim")

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.bind(
            dspy.ChainOfThought("question -> answer"),
            temperature=Support.temperature,
            instructions=Support.instructions,
            lm=Support.model,
        )

    def forward(self, question: str) -> dspy.Prediction:
        return self.answer(question=question)


class Tuned(Support):
    max_tokens = dspex.Variable(int, 256, min=1)
    style = dspex.Variable(str, "plain", name="answer_style")

    def __init__(self) -> None:
        super().__init__()
        self.polish = dspex.bind(
            dspy.Predict("answer -> polished"),
            max_tokens=Tuned.max_tokens,
            instructions=dspex.Variable(str, "Polish it.", name="polish_instructions"),
        )

    def forward(self, question: str) -> dspy.Prediction:
        draft = self.answer(question=question)
        return self.polish(answer=draft.answer)


def test_design_example_runs_and_follows_session_changes(recorder: CallRecorder) -> None:
    with dspex.Session() as session, dspy.context(callbacks=[recorder]):
        program = Support()
        assert program(question="What is DSPy?").answer
        session.set("temperature", 0.2)
        session.set("model", "dspex/sim-large")
        program(question="What is DSPy?")
    first, second = recorder.calls
    assert (first.kwargs["temperature"], first.model) == (0.7, "dspex/sim")
    assert (second.kwargs["temperature"], second.model) == (0.2, "dspex/sim-large")
    assert objective(second.system) == "Answer in one sentence."


def test_construction_registers_declared_variables_idempotently() -> None:
    with dspex.Session() as session:
        Support()
        assert {r.name: r.value for r in session.list()} == {
            "temperature": 0.7,
            "instructions": "Answer in one sentence.",
            "model": "dspex/sim",
        }
        session.set("temperature", 1.3)
        Support()  # registering again keeps the existing value and version
        record = session.variable("temperature")
        assert (record.value, record.version) == (1.3, 2)


def test_program_built_outside_a_session_registers_on_first_call() -> None:
    program = Support()
    with dspex.Session() as session:
        assert session.list() == []
        program(question="What is 2 + 2?")
        assert session.get("model") == "dspex/sim"
    with dspex.Session() as other:  # a new session gets its own registration
        program(question="What is 2 + 2?")
        assert other.get("temperature") == 0.7


def test_conflicting_spec_in_the_session_is_refused() -> None:
    with dspex.Session() as session:
        session.register("temperature", str, "hot")
        with pytest.raises(VariableExistsError, match="temperature"):
            Support()


def test_inherited_and_bound_declarations_are_listed() -> None:
    assert list(Tuned.declared_variables) == [
        "temperature",
        "instructions",
        "model",
        "max_tokens",
        "answer_style",
    ]
    names = [name for name, _ in Tuned().named_variables()]
    assert names == [*Tuned.declared_variables, "polish_instructions"]
    with dspex.Session() as session:
        program = Tuned()
        program.register_variables()
        assert session.get("polish_instructions") == "Polish it."


def test_duplicate_declaration_with_another_spec_is_refused() -> None:
    with pytest.raises(VariableExistsError, match="twice"):

        class Broken(dspex.Program):
            a = dspex.Variable(float, 0.1, name="x")
            b = dspex.Variable(str, "s", name="x")


def test_save_and_load_round_trip_values_and_specs(tmp_path: Path) -> None:
    path = tmp_path / "support.json"
    with dspex.Session() as session:
        program = Tuned()
        program.answer.predict.demos = [{"question": "q", "reasoning": "r", "answer": "a"}]
        session.update({"temperature": 0.25, "model": "dspex/sim-large", "max_tokens": 32})
        session.set("instructions", "Be exact.")
        with dspy.context(lm=dspex.SimLM()):  # the polish step uses the configured LM
            program(question="What is 3 + 4?")
        program.save(str(path))
    saved = json.loads(path.read_text())["dspex_variables"]
    assert saved["temperature"] == {
        "type": "float",
        "constraints": {"min": 0.0, "max": 2.0},
        "value": 0.25,
        "version": 2,
    }
    assert saved["model"]["constraints"] == {"choices": ["dspex/sim", "dspex/sim-large"]}
    assert saved["polish_instructions"]["value"] == "Polish it."

    recorder = CallRecorder()
    with dspex.Session() as fresh, dspy.context(lm=dspex.SimLM(), callbacks=[recorder]):
        restored = Tuned()
        restored.load(str(path))
        assert {r.name: r.value for r in fresh.list()} == {
            "temperature": 0.25,
            "instructions": "Be exact.",
            "model": "dspex/sim-large",
            "max_tokens": 32,
            "answer_style": "plain",
            "polish_instructions": "Polish it.",
        }
        assert fresh.variable("temperature").spec == Support.temperature.spec
        assert restored.answer.predict.demos == [
            {"question": "q", "reasoning": "r", "answer": "a"}
        ]
        restored(question="What is 3 + 4?")
    assert (recorder.calls[0].kwargs["temperature"], recorder.calls[0].model) == (
        0.25,
        "dspex/sim-large",
    )
    assert recorder.calls[1].kwargs["max_tokens"] == 32


def test_load_registers_variables_missing_from_the_session(tmp_path: Path) -> None:
    path = tmp_path / "bound.json"
    bias = dspex.Variable(dict, {"a": 1}, name="bias")
    with dspex.Session() as session:
        bound = dspex.bind(dspy.Predict("q -> a"), config={"logit_bias": bias})
        session.set("bias", {"b": 2})
        bound.save(str(path))
    with dspex.Session() as fresh:
        dspex.bind(dspy.Predict("q -> a"), temperature="t_only").load_state(
            json.loads(path.read_text())
        )
        assert fresh.get("bias") == {"b": 2}
        assert fresh.variable("bias").spec.type == "json"


def test_bad_load_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "support.json"
    with dspex.Session() as session:
        program = Support()
        session.set("temperature", 0.1)
        program.save(str(path))
    state: dict[str, Any] = json.loads(path.read_text())
    target = Support()
    target.answer.predict.demos = [{"question": "keep"}]

    with pytest.raises(SessionError, match="inside"):
        target.load(str(path))  # no session
    assert target.answer.predict.demos == [{"question": "keep"}]

    with dspex.Session() as session:
        session.register("temperature", int, 3)
        with pytest.raises(VariableExistsError, match="temperature"):
            target.load(str(path))
        assert target.answer.predict.demos == [{"question": "keep"}]
        assert session.list("instructions") == []

    bad = json.loads(json.dumps(state))
    bad["dspex_variables"]["temperature"]["value"] = 9.0  # breaks max=2.0
    with dspex.Session() as session:
        with pytest.raises(dspex.errors.VariableValueError, match="max"):
            target.load_state(bad)
        assert session.list() == []


def test_save_outside_a_session_writes_declared_defaults(tmp_path: Path) -> None:
    path = tmp_path / "defaults.json"
    Support().save(str(path))
    saved = json.loads(path.read_text())["dspex_variables"]
    assert saved["temperature"]["value"] == 0.7 and saved["temperature"]["version"] is None


def test_program_survives_deepcopy_and_cloudpickle() -> None:
    with dspex.Session() as session:
        program = Support()
        session.set("temperature", 0.4)
        copies = [
            program.deepcopy(),
            program.reset_copy(),
            cloudpickle.loads(cloudpickle.dumps(program)),
        ]
        for twin in copies:
            assert [n for n, _ in twin.named_predictors()] == ["answer.predict"]
            with dspy.context(callbacks=[recorder := CallRecorder()]):
                twin(question="q")
            assert recorder.calls[0].kwargs["temperature"] == 0.4


def test_optimizer_compiles_a_program_with_bound_modules() -> None:
    from dspex.sim import answer_match, load_devset

    class QA(dspex.Program):
        temperature = dspex.Variable(float, 0.2, min=0.0, max=2.0)
        instructions = dspex.Variable(str, "Calculate step by step; answer with a number.")

        def __init__(self) -> None:
            super().__init__()
            self.answer = dspex.bind(
                dspy.Predict("question -> answer"),
                temperature=QA.temperature,
                instructions=QA.instructions,
            )

        def forward(self, question: str) -> dspy.Prediction:
            return self.answer(question=question)

    recorder = CallRecorder()
    with dspex.Session() as session, dspy.context(lm=dspex.SimLM("dspex/sim-large")):
        student = QA()
        optimizer = dspy.BootstrapFewShot(
            metric=answer_match, max_bootstrapped_demos=2, max_labeled_demos=2
        )
        compiled = optimizer.compile(student, trainset=load_devset("arithmetic")[:8])
        assert [len(p.demos) for _, p in compiled.named_predictors()] == [2]
        assert student.answer.demos == []  # the optimizer worked on a copy
        session.set("temperature", 0.05)
        with dspy.context(callbacks=[recorder]):
            compiled(question="What is 23 * 4?")
    assert recorder.calls[0].kwargs["temperature"] == 0.05
    assert objective(recorder.calls[0].system) == "Calculate step by step; answer with a number."
