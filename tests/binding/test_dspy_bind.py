"""dspex.bind: bound values reach the LM per call; the predictors' own saved state is untouched."""

from __future__ import annotations

import copy
from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM
from support.binding import CallRecorder, objective

import dspex
from dspex.binding import BoundModule, resolve_lm
from dspex.binding._predictor import local_view
from dspex.sim import SimLM

pytestmark = pytest.mark.timeout(60)

TEMPERATURE = dspex.Variable(float, 0.7, name="temperature", min=0.0, max=2.0)
INSTRUCTIONS = dspex.Variable(str, "Answer in one word.", name="instructions")
MAX_TOKENS = dspex.Variable(int, 64, name="max_tokens", min=1)
MODEL = dspex.Variable(dspex.Choice("dspex/sim", "dspex/sim-large"), "dspex/sim", name="model")


def snapshot(module: dspy.Module) -> dict[str, Any]:
    """Every predictor's own values (which a bound call never writes), as DSPy state, without
    the dspex variables section (``dump_state`` itself saves the bound values)."""
    with local_view():
        states = module.dump_state()
    if isinstance(module, dspy.Predict):  # a predictor dumps its own state, unnamed
        states = {"self": states}
    return {
        name: {k: v for k, v in state.items() if k != "dspex_variables"}
        for name, state in states.items()
    }


def test_predict_receives_each_value_at_call_time(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    predict = dspy.Predict("question -> answer", temperature=1.5)
    before = snapshot(predict)
    bound = dspex.bind(
        predict, temperature=TEMPERATURE, instructions=INSTRUCTIONS, max_tokens=MAX_TOKENS
    )
    lm = DummyLM({"": {"answer": "Paris"}})
    with dspy.context(lm=lm, callbacks=[recorder]):
        assert bound(question="Capital of France?").answer == "Paris"
        session.set("temperature", 0.2)
        session.set("instructions", "Name the city only.")
        bound(question="Capital of France?")
        session.update({"temperature": 1.1, "max_tokens": 7})
        bound(question="Capital of France?")

    seen = [
        (c.kwargs["temperature"], c.kwargs["max_tokens"], objective(c.system))
        for c in recorder.calls
    ]
    assert seen == [
        (0.7, 64, "Answer in one word."),
        (0.2, 64, "Name the city only."),
        (1.1, 7, "Name the city only."),
    ]
    assert snapshot(predict) == before  # the predictor's own signature and demos untouched
    assert predict.config == {}  # its own temperature gives way to the bound one


def test_chain_of_thought_and_custom_module_get_values_on_every_predictor(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    class TwoStep(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.draft = dspy.ChainOfThought("question -> answer")
            self.check = dspy.Predict("question, answer -> verdict")

        def forward(self, question: str) -> dspy.Prediction:
            draft = self.draft(question=question)
            return self.check(question=question, answer=draft.answer)

    program = TwoStep()
    before = snapshot(program)
    bound = dspex.bind(program, temperature=TEMPERATURE, max_tokens=MAX_TOKENS)
    lm = DummyLM({"": {"reasoning": "r", "answer": "a", "verdict": "ok"}})
    with dspy.context(lm=lm, callbacks=[recorder]):
        bound(question="q1")
        session.set("temperature", 0.0)
        bound(question="q2")

    assert [(c.kwargs["temperature"], c.kwargs["max_tokens"]) for c in recorder.calls] == [
        (0.7, 64),
        (0.7, 64),
        (0.0, 64),
        (0.0, 64),
    ]
    assert snapshot(program) == before


def test_chain_of_thought_instructions_replace_the_predictor_instructions(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    cot = dspy.ChainOfThought("question -> answer")
    original = cot.predict.signature
    bound = dspex.bind(cot, instructions=INSTRUCTIONS)
    with dspy.context(lm=DummyLM({"": {"reasoning": "r", "answer": "a"}}), callbacks=[recorder]):
        bound(question="q")
    assert objective(recorder.calls[0].system) == "Answer in one word."
    assert "`reasoning`" in recorder.calls[0].system  # the extended signature is kept
    assert snapshot(cot)["predict"]["signature"]["instructions"] == original.instructions


def test_react_task_instructions_replaced_tool_list_kept(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    def get_weather(city: str) -> str:
        """Weather report for a city."""
        return f"sunny in {city}"

    react = dspy.ReAct("question -> answer", tools=[get_weather], max_iters=2)
    before = snapshot(react)
    bound = dspex.bind(react, instructions=INSTRUCTIONS, lm=MODEL, temperature=TEMPERATURE)
    with dspy.context(callbacks=[recorder]):  # no LM configured at all: the bound one is used
        result = bound(question="What is 2 + 2?")
    assert result.answer
    agent, extract = recorder.calls[0], recorder.calls[-1]
    assert objective(agent.system).startswith("Answer in one word. You are an Agent.")
    assert "get_weather" in agent.system and "finish" in agent.system
    assert objective(extract.system) == "Answer in one word."
    assert {c.model for c in recorder.calls} == {"dspex/sim"}
    assert {c.kwargs["temperature"] for c in recorder.calls} == {0.7}
    assert snapshot(react) == before


def test_lm_choice_picks_the_model_per_call(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    predict = dspy.Predict("question -> answer")
    bound = dspex.bind(predict, lm=MODEL)
    with dspy.context(callbacks=[recorder]):
        bound(question="What is 12 * 7?")
        session.set("model", "dspex/sim-large")
        bound(question="What is 12 * 7?")
        session.set("model", "dspex/sim")
        bound(question="What is 12 * 7?")
        own_lm = DummyLM({"": {"answer": "from own lm"}})
        predict.lm = own_lm  # a predictor's own LM wins over the context LM, as in DSPy
        assert bound(question="What is 12 * 7?").answer == "from own lm"
    assert [c.model for c in recorder.calls] == [
        "dspex/sim",
        "dspex/sim-large",
        "dspex/sim",
        "dummy",
    ]
    sim = resolve_lm("dspex/sim")
    assert isinstance(sim, SimLM) and sim is resolve_lm("dspex/sim")
    assert sim.history[-1]["model"] == "dspex/sim"


def test_factory_sends_other_names_to_dspy_lm() -> None:
    lm = resolve_lm("openai/gpt-4o-mini")
    assert type(lm) is dspy.LM and lm.model == "openai/gpt-4o-mini"
    assert resolve_lm("openai/gpt-4o-mini") is lm  # cached, one instance per name


def test_demos_variable_feeds_per_call_demos(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    demos = dspex.Variable(list, [], name="demos")
    predict = dspy.Predict("question -> answer")
    bound = dspex.bind(predict, demos=demos)
    with dspy.context(lm=DummyLM({"": {"answer": "a"}}), callbacks=[recorder]):
        bound(question="new question")
        session.set("demos", [{"question": "What is 1 + 1?", "answer": "2"}])
        bound(question="new question")
    assert "What is 1 + 1?" not in recorder.calls[0].user
    assert "What is 1 + 1?" in recorder.calls[1].user
    assert snapshot(predict)["self"]["demos"] == []


def test_config_mapping_binds_any_lm_keyword(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    session.register("route", str, "fast")
    bound = dspex.bind(dspy.Predict("question -> answer"), config={"route_hint": "route"})
    with dspy.context(lm=DummyLM({"": {"answer": "a"}}), callbacks=[recorder]):
        bound(question="q")
        session.set("route", "careful")
        bound(question="q")
    assert [c.kwargs["route_hint"] for c in recorder.calls] == ["fast", "careful"]


def test_per_call_config_inside_keeps_its_precedence_and_inner_binding_wins(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    inner_temperature = dspex.Variable(float, 0.9, name="inner_temperature")

    class Outer(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = dspy.Predict("question -> answer")
            self.second = dspex.bind(
                dspy.Predict("question -> answer"), temperature=inner_temperature
            )

        def forward(self, question: str) -> dspy.Prediction:
            self.first(question=question, config={"temperature": 1.9})
            return self.second(question=question)

    bound = dspex.bind(Outer(), temperature=TEMPERATURE, instructions=INSTRUCTIONS)
    with dspy.context(lm=DummyLM({"": {"answer": "a"}}), callbacks=[recorder]):
        bound(question="q")
    first, second = recorder.calls
    assert first.kwargs["temperature"] == 1.9  # a per-call config inside wins, as in DSPy
    assert second.kwargs["temperature"] == 0.9  # the nearer binding wins for its hook
    assert objective(second.system) == "Answer in one word."  # and inherits the others


def test_configured_adapter_is_kept(session: dspex.Session, recorder: CallRecorder) -> None:
    bound = dspex.bind(dspy.Predict("question -> answer: int"), temperature=TEMPERATURE)
    with dspy.context(adapter=dspy.JSONAdapter(), lm=SimLM(), callbacks=[recorder]):
        result = bound(question="What is 2 + 3?")
        assert isinstance(dspy.settings.adapter, dspy.JSONAdapter)
    assert isinstance(result.answer, int)
    assert "Respond with a JSON object" in recorder.calls[0].user
    assert recorder.calls[0].kwargs["temperature"] == 0.7


def test_bound_module_is_the_same_dspy_module(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    predict = dspy.Predict("question -> answer")
    bound = dspex.bind(predict, temperature=TEMPERATURE, instructions="instructions")
    assert bound is predict and isinstance(bound, dspy.Predict)
    assert isinstance(bound, BoundModule) and type(bound).__name__ == "Predict"
    assert bound.bindings == {"temperature": "temperature", "instructions": "instructions"}
    assert [p for _, p in bound.named_predictors()] == [predict]
    twin = bound.deepcopy()
    assert twin is not predict and twin.bindings == bound.bindings
    clone = copy.deepcopy(bound)
    session.register("instructions", str, "Be brief.")
    with dspy.context(lm=DummyLM({"": {"answer": "a"}}), callbacks=[recorder]):
        clone(question="q")
    assert recorder.calls[-1].kwargs["temperature"] == 0.7
    assert objective(recorder.calls[-1].system) == "Be brief."


def test_copies_made_inside_a_bound_call_reuse_the_bound_signature_classes(
    session: dspex.Session, recorder: CallRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BestOfN copies its module per attempt, inside the call: after the first call, no bound
    signature class is built again (each one is a pydantic model, about 1 ms), and every
    attempt still sends the bound instructions; a change of the value builds one class more."""
    from dspex.binding import _predictor

    built: list[str] = []
    build = _predictor.instructed

    def counted(own: Any, text: str, suffix: str) -> Any:
        built.append(text)
        return build(own, text, suffix)

    monkeypatch.setattr(_predictor, "instructed", counted)
    best = dspy.BestOfN(dspy.Predict("question -> answer"), N=3, reward_fn=lambda a, p: 0.0,
                        threshold=1.0)  # fmt: skip
    bound = dspex.bind(best, instructions=INSTRUCTIONS, temperature=TEMPERATURE)
    with dspy.context(lm=DummyLM({"": {"answer": "Paris"}}), callbacks=[recorder]):
        bound(question="Capital of France?")
        first = len(built)
        for _ in range(3):
            bound(question="Capital of France?")
        assert len(built) == first == 1
        session.set("instructions", "Name the city only.")
        bound(question="Capital of France?")
    assert built == ["Answer in one word.", "Name the city only."]
    systems = [objective(c.system) for c in recorder.calls]
    assert systems == ["Answer in one word."] * 12 + ["Name the city only."] * 3
