"""The simulation LM: deterministic, offline, parseable for any signature, tunable by variables."""

from __future__ import annotations

import asyncio
from typing import Literal

import dspy
import pytest

import dspex
from dspex.errors import DspexError
from dspex.sim import SimLM, answer_match, burn_cpu, correct_probability, load_devset

pytestmark = pytest.mark.timeout(120)

GOOD = (
    "Calculate step by step and answer with a number; for a capital give only the name of "
    "the city; for a review give the sentiment in one word."
)


def score(model: str, temperature: float, instructions: str) -> float:
    program = dspy.Predict(dspy.Signature("question -> answer", instructions))
    evaluate = dspy.Evaluate(
        devset=load_devset(), metric=answer_match, num_threads=1, display_progress=False
    )
    with dspy.context(lm=SimLM(model, temperature=temperature)):
        return float(evaluate(program).score)


def test_devset_is_bundled() -> None:
    devset = load_devset()
    assert len(devset) == 36
    assert {e.task for e in devset} == {"arithmetic", "capital", "sentiment"}
    assert set(devset[0].inputs().keys()) == {"question"}
    assert len(load_devset("capital")) == 12


def test_same_request_same_reply() -> None:
    predict = dspy.ChainOfThought("question -> answer")
    replies = []
    for _ in range(2):
        with dspy.context(lm=SimLM(temperature=0.9)):
            replies.append(predict(question="What is the capital of Canada?").toDict())
    assert replies[0] == replies[1]


def test_tuning_moves_the_metric_monotonically() -> None:
    hot_plain = score("dspex/sim", 1.5, "Answer the question.")
    cold_plain = score("dspex/sim", 0.0, "Answer the question.")
    cold_good = score("dspex/sim", 0.0, GOOD)
    cold_good_large = score("dspex/sim-large", 0.0, GOOD)
    cold_good_small = score("dspex/sim-small", 0.0, GOOD)
    assert hot_plain < cold_plain < cold_good < cold_good_large
    assert cold_good_small <= cold_good
    assert cold_good_large - hot_plain >= 40.0  # a sweep visibly moves the score


def test_probability_formula_bounds() -> None:
    assert correct_probability("arithmetic", GOOD, 0.0, 3, "dspex/sim-large") == 0.98
    assert correct_probability("arithmetic", "be creative and guess", 2.0, 0, "dspex/sim") == 0.02
    assert correct_probability("capital", "", 0.5, 0, "dspex/sim-unknown") == pytest.approx(0.35)


class Everything(dspy.Signature):
    """Answer with every kind of field."""

    question: str = dspy.InputField()
    answer: Literal["positive", "negative"] = dspy.OutputField()
    score: float = dspy.OutputField()
    count: int = dspy.OutputField()
    flag: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    extra: dict[str, int] = dspy.OutputField()


@pytest.mark.parametrize("adapter", [dspy.ChatAdapter(), dspy.JSONAdapter(), dspy.XMLAdapter()])
def test_any_signature_parses_with_each_adapter(adapter: dspy.Adapter) -> None:
    with dspy.context(lm=SimLM("dspex/sim-large", temperature=0.0), adapter=adapter):
        result = dspy.ChainOfThought(Everything)(
            question='Is this review positive or negative? "I want my money back."'
        )
        arithmetic = dspy.Predict("question -> answer: int")(question="What is 12 * 7?")
    assert result.answer in ("positive", "negative")
    assert isinstance(result.score, float) and isinstance(result.count, int)
    assert isinstance(result.flag, bool) and isinstance(result.tags, list)
    assert isinstance(result.extra, dict) and result.reasoning.startswith("Simulated reasoning")
    assert isinstance(arithmetic.answer, int)


def test_react_finishes_and_acall_works() -> None:
    react = dspy.ReAct("question -> answer", tools=[lambda city: "sunny"], max_iters=3)
    lm = SimLM(latency=0.001)
    with dspy.context(lm=lm):
        result = react(question="What is 2 + 2?")
        asynced = asyncio.run(dspy.Predict("question -> answer").acall(question="What is 5 + 5?"))
    assert result.trajectory["tool_name_0"] == "finish"
    assert asynced.answer
    assert lm.history[-1]["model"] == "dspex/sim"


def test_knobs_and_state() -> None:
    assert burn_cpu(1000) == burn_cpu(1000) != burn_cpu(1001)
    lm = SimLM("dspex/sim-large", temperature=0.3, cpu_work=2000, latency=0.0)
    with dspy.context(lm=lm):
        assert dspy.Predict("question -> answer")(question="What is 1 + 2?").answer
    state = lm.dump_state()
    assert (state["cpu_work"], state["model"], state["temperature"]) == (
        2000,
        "dspex/sim-large",
        0.3,
    )
    again = dspy.BaseLM.load_state(state, allow_custom_lm_class=True)
    assert isinstance(again, SimLM) and again.cpu_work == 2000 and again.kwargs == lm.kwargs


def test_saved_predictor_with_sim_lm_loads_back(tmp_path: object) -> None:
    predict = dspy.Predict("question -> answer")
    predict.lm = SimLM("dspex/sim-small", temperature=0.1)
    path = f"{tmp_path}/predict.json"
    predict.save(path)
    loaded = dspy.Predict("question -> answer")
    loaded.load(path, allow_unsafe_lm_state=True)
    assert isinstance(loaded.lm, SimLM) and loaded.lm.model == "dspex/sim-small"


@pytest.mark.parametrize(
    "kwargs", [{"model": "openai/gpt-4o"}, {"model": "dspex/simulated"}, {"cpu_work": -1}]
)
def test_bad_sim_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(DspexError):
        SimLM(**kwargs)  # type: ignore[arg-type]


def test_sim_is_exported_lazily() -> None:
    assert dspex.SimLM is SimLM
