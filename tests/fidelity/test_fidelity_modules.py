"""Differential cases over DSPy modules: bound with V sends what plain DSPy with V sends."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import dspy
import pytest
from dspy.adapters.types.decision import Choice
from dspy.utils.exceptions import AdapterParseError
from support.fidelity import VARIABLES, Bind, Env, Values, assert_same, kwargs_of, lookup, question

import dspex

pytestmark = pytest.mark.timeout(60)


def ask(program: dspy.Module, env: Env) -> None:
    for i in range(2):
        program(question=question(i))


def test_predict() -> None:
    assert_same(lambda sig, bind: bind(dspy.Predict(sig)), ask)


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
def test_chain_of_thought(values: Values) -> None:
    requests = assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), ask, values)
    assert {r.model for r in requests} == {f"dspex/sim{'-large' if values.lm else ''}"}


def test_react_bound_directly_keeps_its_tool_protocol() -> None:
    requests = assert_same(
        lambda sig, bind: bind(dspy.ReAct(sig, tools=[lookup], max_iters=2)), ask
    )
    assert any("lookup" in content for r in requests for _, content in r.messages)


class Agent(dspy.Module):
    """A custom module wrapping ReAct (defect 1: the wrapper's bind lost the tool protocol)."""

    def __init__(self, sig: Any) -> None:
        super().__init__()
        self.agent = dspy.ReAct(sig, tools=[lookup], max_iters=2)

    def forward(self, question: str) -> Any:
        return self.agent(question=question)


def test_react_through_a_wrapper_keeps_its_tool_protocol() -> None:
    requests = assert_same(lambda sig, bind: bind(Agent(sig)), ask)
    assert any("lookup" in content for r in requests for _, content in r.messages)


def reward(args: dict[str, Any], pred: Any) -> float:
    return 0.0  # never good enough: every attempt runs


def best_of(module: dspy.Module) -> dspy.Module:
    return dspy.BestOfN(module, N=3, reward_fn=reward, threshold=1.0)


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
def test_best_of_n_bound_outside(values: Values) -> None:
    requests = assert_same(lambda sig, bind: bind(best_of(dspy.Predict(sig))), ask, values)
    assert len(requests) == 6
    assert {kwargs_of(r)["temperature"] for r in requests} == {"1.0"}
    assert len({kwargs_of(r)["rollout_id"] for r in requests}) == 3


def test_best_of_n_around_a_bound_module() -> None:
    requests = assert_same(
        lambda sig, bind: best_of(bind(dspy.Predict(sig))),
        ask,
    )
    assert len(requests) == 6


def test_best_of_n_around_a_bound_lm_with_no_lm_configured() -> None:
    """Defect 3: BestOfN(bind(..., lm=...)) with no LM configured raised AttributeError."""
    values = Values(temperature=None, max_tokens=None, lm="large")
    requests = assert_same(
        lambda sig, bind: best_of(bind(dspy.Predict(sig))),
        ask,
        values,
        configure_lm=False,
    )
    assert {r.model for r in requests} == {"dspex/sim-large"}


def test_refine() -> None:
    requests = assert_same(
        lambda sig, bind: bind(
            dspy.Refine(dspy.Predict(sig), N=2, reward_fn=reward, threshold=1.0)
        ),
        ask,
    )
    assert len({kwargs_of(r).get("rollout_id") for r in requests}) >= 2


def test_multi_chain_comparison() -> None:
    completions = [
        dspy.Prediction(reasoning="It is 84.", answer="84"),
        dspy.Prediction(reasoning="Maybe 80.", answer="80"),
    ]

    def run(program: dspy.Module, env: Env) -> None:
        program(completions=completions, question=question(0))

    # MultiChainComparison sets temperature on its own predictor's config; a bound temperature
    # replaces that (plain DSPy: set predictor.config["temperature"]), so V binds max_tokens here.
    assert_same(
        lambda sig, bind: bind(dspy.MultiChainComparison(sig, M=2)),
        run,
        Values(temperature=None),
    )


class Fanout(dspy.Module):
    """A custom module running its predictor over several questions with dspy.Parallel."""

    def __init__(self, sig: Any) -> None:
        super().__init__()
        self.answer = dspy.Predict(sig)

    def forward(self, questions: list[str]) -> Any:
        pairs = [(self.answer, {"question": q}) for q in questions]
        return dspy.Parallel(num_threads=4)(pairs)


def test_parallel_inside_a_bound_module() -> None:
    def run(program: dspy.Module, env: Env) -> None:
        program(questions=[question(i) for i in range(4)])

    assert_same(lambda sig, bind: bind(Fanout(sig)), run, ordered=False)


class Outer(dspy.Module):
    """Nested custom modules: an inner bound module inside an outer one."""

    def __init__(self, inner: dspy.Module, sig: Any) -> None:
        super().__init__()
        self.inner = inner
        self.check = dspy.ChainOfThought("question, answer -> verdict: bool")

    def forward(self, question: str) -> Any:
        answer = self.inner(question=question).answer
        return self.check(question=question, answer=answer)


def test_nested_custom_modules_with_nested_binds() -> None:
    """The inner bind holds instructions and demos, the outer one the LM keywords."""

    def build(sig: Any, bind: Bind) -> dspy.Module:
        if bind.__name__ == "configure":  # plain: configured by the harness, no split needed
            return Outer(bind(dspy.Predict(sig)), sig)
        inner = dspex.bind(
            dspy.Predict(sig), instructions=VARIABLES["instructions"], demos=VARIABLES["demos"]
        )
        return dspex.bind(
            Outer(inner, sig),
            temperature=VARIABLES["temperature"],
            max_tokens=VARIABLES["max_tokens"],
        )

    requests = assert_same(build, ask)
    assert len(requests) == 4


class Decide(dspy.Signature):
    """Classify the sentiment of the text."""

    text: str = dspy.InputField()
    label: Annotated[Literal["positive", "negative", "neutral"], Choice] = dspy.OutputField(
        desc="the sentiment"
    )


def test_literal_output_with_demos() -> None:
    """Defect 7: a decision (Literal) output with bound demos."""
    demos = [{"text": "I love it", "label": "positive"}, {"text": "Awful.", "label": "negative"}]

    def build(sig: Any, bind: Bind) -> dspy.Module:
        instructions = sig.instructions
        decide = (
            Decide
            if "Given the fields" in instructions
            else Decide.with_instructions(instructions)
        )
        return bind(dspy.Predict(decide))

    def run(program: dspy.Module, env: Env) -> None:
        # The simulation LM cannot write decision evidence, so parsing fails after the
        # requests were sent; the requests are what this case compares.
        with pytest.raises(AdapterParseError):
            program(text="What a great day")

    requests = assert_same(build, run, Values(demos=demos))
    assert any("Awful." in content for r in requests for _, content in r.messages)


def test_react_v2_keeps_its_agent_text() -> None:
    def run(program: dspy.Module, env: Env) -> None:
        try:
            program(question=question(0))
        except (AdapterParseError, ValueError):  # the simulation LM cannot call tools well
            pass

    requests = assert_same(
        lambda sig, bind: bind(dspy.ReActV2(sig, tools=[lookup], max_iters=2)), run
    )
    assert any("You are an Agent" in content for r in requests for _, content in r.messages)


@pytest.mark.filterwarnings("ignore:a bound predictor holds")  # the edited demos win, as in DSPy
def test_in_place_edits_of_demos_and_config_are_kept() -> None:
    """SIMBA appends demos in place (predictor.demos.append); config edits work the same way."""

    def run(program: dspy.Module, env: Env) -> None:
        program(question=question(0))
        program.demos.append({"question": "What is 1 + 1?", "answer": "2"})
        program.config["stop"] = ["\n\n"]
        program(question=question(1))

    requests = assert_same(lambda sig, bind: bind(dspy.Predict(sig)), run)
    assert sum(role == "assistant" for role, _ in requests[-1].messages) == 3
    assert kwargs_of(requests[-1])["stop"] == repr(["\n\n"])
