"""Differential cases over DSPy optimizers, while compiling and when running the compiled program.

Each drive compiles the program with the optimizer, then runs the compiled program. The
optimizers' own LM calls (instruction proposals, reflection) go to LMs passed explicitly, the
same way in both runs; the bound variables apply where the bound module runs.

Compiled values assigned to bound predictors win over the variables (and warn when they differ),
so the warning is expected here.
"""

from __future__ import annotations

from typing import Any

import dspy
import pytest
from dspy.utils.dummies import DummyLM
from support.fidelity import Env, Values, assert_same, question

from dspex.sim import answer_match, load_devset

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:a bound predictor holds"),
]

TRAIN = load_devset("arithmetic")[:4]


def build(sig: Any, bind: Any) -> dspy.Module:
    return bind(dspy.Predict(sig))


def compiled(optimize: Any) -> Any:
    """A drive: compile with ``optimize(program, env)``, then run the compiled program."""

    def drive(program: dspy.Module, env: Env) -> None:
        result = optimize(program, env)
        for i in range(2):
            result(question=question(i))

    return drive


def test_labeled_few_shot() -> None:
    """Defect 4: a demos variable at its default [] discarded LabeledFewShot's demos."""
    drive = compiled(lambda p, env: dspy.LabeledFewShot(k=3).compile(p, trainset=TRAIN))
    requests = assert_same(build, drive, Values(demos=[]))
    assert sum(role == "assistant" for role, _ in requests[-1].messages) == 3


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
def test_bootstrap_few_shot_rounds(values: Values) -> None:
    """Defect 3: BootstrapFewShot(max_rounds=3) lost its rollout rounds to a bound LM copy."""

    def optimize(program: dspy.Module, env: Env) -> Any:
        tp = dspy.BootstrapFewShot(
            metric=lambda e, p, t=None: False, max_bootstrapped_demos=1, max_rounds=3
        )
        return tp.compile(program, trainset=TRAIN[:2])

    requests = assert_same(build, compiled(optimize), values)
    rollouts = {dict(r.kwargs).get("rollout_id") for r in requests}
    assert {"1", "2"} <= rollouts


def test_bootstrap_random_search() -> None:
    def optimize(program: dspy.Module, env: Env) -> Any:
        tp = dspy.BootstrapFewShotWithRandomSearch(
            metric=answer_match,
            max_bootstrapped_demos=1,
            max_labeled_demos=1,
            num_candidate_programs=1,
            num_threads=1,
        )
        return tp.compile(program, trainset=TRAIN)

    assert_same(build, compiled(optimize))


def test_copro() -> None:
    """Defect 4: COPRO's compiled instructions never reached the LM."""

    def optimize(program: dspy.Module, env: Env) -> Any:
        tp = dspy.COPRO(
            prompt_model=env.prompt, metric=answer_match, breadth=2, depth=1, init_temperature=1.0
        )
        return tp.compile(
            program, trainset=TRAIN[:2], eval_kwargs={"num_threads": 1, "display_progress": False}
        )

    assert_same(build, compiled(optimize))


def test_mipro_v2() -> None:
    def optimize(program: dspy.Module, env: Env) -> Any:
        tp = dspy.MIPROv2(
            metric=answer_match,
            prompt_model=env.prompt,
            auto=None,
            num_candidates=2,
            num_threads=1,
            max_bootstrapped_demos=1,
            max_labeled_demos=1,
            seed=0,
        )
        return tp.compile(program, trainset=TRAIN, num_trials=2, minibatch=False)

    assert_same(build, compiled(optimize))


def test_simba() -> None:
    def optimize(program: dspy.Module, env: Env) -> Any:
        tp = dspy.SIMBA(
            metric=answer_match,
            bsize=2,
            num_candidates=2,
            max_steps=1,
            max_demos=1,
            prompt_model=env.prompt,
            num_threads=1,
        )
        return tp.compile(program, trainset=TRAIN, seed=0)

    assert_same(build, compiled(optimize))


def feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> Any:
    score = float(answer_match(gold, pred))
    return dspy.Prediction(score=score, feedback=f"The answer should be {gold.answer}.")


REFLECTION = "Compute the result exactly and reply with the number only."


def test_gepa_with_a_scripted_reflection_lm() -> None:
    def optimize(program: dspy.Module, env: Env) -> Any:
        reflection = DummyLM([{"new_instruction": REFLECTION}] * 20, adapter=dspy.JSONAdapter())
        tp = dspy.GEPA(
            metric=feedback_metric,
            reflection_lm=reflection,
            max_metric_calls=12,
            num_threads=1,
            reflection_minibatch_size=2,
            seed=0,
        )
        return tp.compile(program, trainset=TRAIN[:2], valset=TRAIN[2:4])

    requests = assert_same(build, compiled(optimize))
    assert any("number only" in c for r in requests for _, c in r.messages)
