"""Differential cases over more DSPy features: batch, History, Ensemble, KNNFewShot, contexts.

Plain DSPy is the oracle, as in the rest of the suite. The cases that switch LMs with
``dspy.context`` / ``dspy.configure`` set the plain program's values on its predictors: bound LM
keywords as their ``config`` (they reach whichever LM a predictor runs with) and, where a bound
``lm`` choice meets a context entered *outside* the bound call, the chosen LM as their own
``lm``; a context entered inside the bound module's forward picks the LM, as an inner
``dspy.context`` does in DSPy (compared with the suite's harness).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import dspy
import numpy as np
import pytest
from support.fidelity import (
    VARIABLES,
    Env,
    Values,
    assert_requests_equal,
    assert_same,
    question,
    run_bound,
    run_plain,
    run_plain_owned,
)

import dspex
from dspex.binding import BoundModule
from dspex.sim import answer_match, load_devset

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore:a bound predictor holds"),
]

TRAIN = load_devset("arithmetic")[:6]


def ask(program: dspy.Module, env: Env) -> None:
    for i in range(2):
        program(question=question(i))


def examples(n: int) -> list[dspy.Example]:
    return [dspy.Example(question=question(i)).with_inputs("question") for i in range(n)]


# ------------------------------------------------------------------------------------------
# 1. Module.batch


@pytest.mark.parametrize(
    ("threads", "values"),
    [(1, Values()), (4, Values()), (4, Values(lm="large"))],
    ids=["one thread", "four threads", "four threads, lm choice"],
)
def test_batch(threads: int, values: Values) -> None:
    answers: dict[str, list[str]] = {}

    def run(program: dspy.Module, env: Env) -> None:
        results = program.batch(examples(4), num_threads=threads, disable_progress_bar=True)
        answers.setdefault("plain" if "plain" not in answers else "bound", []).extend(
            r.answer for r in results
        )

    requests = assert_same(
        lambda sig, bind: bind(dspy.ChainOfThought(sig)), run, values, ordered=threads == 1
    )
    assert answers["plain"] == answers["bound"]
    assert {r.model for r in requests} == {f"dspex/sim{'-large' if values.lm else ''}"}


def test_batch_reads_the_values_per_call() -> None:
    """A value changed between two batches reaches the second one, as a new plain config does."""
    first, second = Values(), Values(temperature=1.1, max_tokens=99, instructions="Be brief.")

    def plain() -> Env:
        env = Env.fresh()
        dspy.configure(lm=env.lm, callbacks=[env.recorder])
        program = dspy.Predict(dspy.Signature("question -> answer"))
        for values in (first, second):
            program.signature = program.signature.with_instructions(values.instructions)
            program.demos = list(values.demos or [])
            with dspy.context(lm=env.lm.copy(**values.config())):
                program.batch(examples(3), num_threads=3, disable_progress_bar=True)
        return env

    def bound() -> Env:
        env = Env.fresh()
        dspy.configure(lm=env.lm, callbacks=[env.recorder])
        hooks = {h: VARIABLES[h] for h in ("temperature", "max_tokens", "instructions", "demos")}
        with dspex.Session() as session:
            program: Any = dspex.bind(dspy.Predict("question -> answer"), **hooks)
            for values in (first, second):
                session.update({v.name: getattr(values, h) for h, v in hooks.items()})
                program.batch(examples(3), num_threads=3, disable_progress_bar=True)
        return env

    assert_requests_equal(plain().recorder.requests, bound().recorder.requests, ordered=False)


# ------------------------------------------------------------------------------------------
# 2. dspy.History


def with_history(sig: type[dspy.Signature]) -> type[dspy.Signature]:
    extended: type[dspy.Signature] = sig.prepend("history", dspy.InputField(), type_=dspy.History)
    return extended


def test_history_field() -> None:
    history = dspy.History(
        messages=[
            {"question": "What is 1 + 1?", "answer": "2"},
            {"question": "And times three?", "answer": "6"},
        ]
    )

    def run(program: dspy.Module, env: Env) -> None:
        for i in range(2):
            program(question=question(i), history=history)

    requests = assert_same(lambda sig, bind: bind(dspy.ChainOfThought(with_history(sig))), run)
    assert any("And times three?" in c for r in requests for _, c in r.messages)


# ------------------------------------------------------------------------------------------
# 3. Ensemble and KNNFewShot


def ensemble(sig: type[dspy.Signature], bind: Callable[[dspy.Module], dspy.Module]) -> Any:
    programs = [bind(dspy.Predict(sig)) for _ in range(3)]
    return dspy.Ensemble(reduce_fn=dspy.majority).compile(programs)


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
@pytest.mark.parametrize("where", ["members", "ensemble"])
def test_ensemble(where: str, values: Values) -> None:
    answers: list[Any] = []

    def build(sig: Any, bind: Any) -> dspy.Module:
        if where == "members":
            return ensemble(sig, bind)
        return bind(ensemble(sig, lambda m: m))

    def run(program: dspy.Module, env: Env) -> None:
        answers.extend(program(question=question(i)).answer for i in range(2))

    requests = assert_same(build, run, values)
    assert len(requests) == 6
    assert {r.model for r in requests} == {f"dspex/sim{'-large' if values.lm else ''}"}
    assert answers[:2] == answers[2:]


def embed(texts: list[str]) -> np.ndarray:
    """A deterministic local embedding: byte-trigram hashes into 64 buckets."""
    vectors = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for i in range(max(len(text) - 2, 1)):
            bucket = hashlib.md5(text[i : i + 3].encode()).digest()[0] % 64
            vectors[row, bucket] += 1.0
    return vectors


def test_knn_few_shot() -> None:
    def run(program: dspy.Module, env: Env) -> None:
        tp = dspy.KNNFewShot(
            k=2,
            trainset=TRAIN,
            vectorizer=dspy.Embedder(embed, caching=False),
            max_bootstrapped_demos=1,
            max_labeled_demos=2,
        )
        ask(tp.compile(program), env)

    requests = assert_same(lambda sig, bind: bind(dspy.Predict(sig)), run)
    assert any(e.question in c for e in TRAIN for r in requests for _, c in r.messages)


# ------------------------------------------------------------------------------------------
# 4. dspy.context / dspy.configure around bound LM hooks


Drive = Callable[[dspy.Module, Env], None]


def switching(program: dspy.Module, env: Env) -> None:
    """Calls under the configured LM, under ``dspy.context(lm=...)``, and after a reconfigure."""
    program(question=question(0))
    with dspy.context(lm=env.prompt):
        program(question=question(1))
        with dspy.context(lm=env.large):
            program(question=question(2))
    dspy.settings.configure(lm=env.prompt)
    program(question=question(3))


def plain_owned(values: Values, drive: Drive) -> Env:
    """Plain DSPy with ``values`` on the ChainOfThought's predictors (own ``lm``, ``config``)."""
    return run_plain_owned(chain_of_thought, drive, values)


def bound_session(values: Values, drive: Drive) -> Env:
    """The same program bound, with ``values`` in a session."""
    return run_bound(chain_of_thought, drive, values)


def chain_of_thought(sig: type[dspy.Signature], bind: Callable[[dspy.Module], Any]) -> Any:
    return bind(dspy.ChainOfThought(sig))


def test_bound_lm_wins_over_context_lm() -> None:
    """A bound ``lm`` is not replaced by a dspy.context(lm=...) entered around the bound call."""
    values = Values(lm="large")
    plain = plain_owned(values, switching).recorder.requests
    assert_requests_equal(plain, bound_session(values, switching).recorder.requests)
    assert {r.model for r in plain} == {"dspex/sim-large"}


def test_bound_temperature_follows_the_context_lm() -> None:
    """Only LM keywords bound: the LM comes from dspy.context / dspy.configure, as in DSPy."""
    values = Values(instructions=None, demos=None)
    plain = plain_owned(values, switching).recorder.requests
    assert_requests_equal(plain, bound_session(values, switching).recorder.requests)
    assert {r.model for r in plain} == {"dspex/sim", "dspex/sim-small", "dspex/sim-large"}


@pytest.mark.parametrize(
    "values",
    [Values(instructions=None, demos=None), Values(lm="large")],
    ids=["keywords", "keywords and lm choice"],
)
def test_bound_temperature_on_a_predictor_with_its_own_lm(values: Values) -> None:
    """A predictor given its own ``lm`` (set_lm) runs with it, with the bound LM keywords."""

    def drive(program: dspy.Module, env: Env) -> None:
        program.set_lm(env.prompt)
        switching(program, env)

    plain = plain_owned(values, drive).recorder.requests
    assert_requests_equal(plain, bound_session(values, drive).recorder.requests)
    assert {r.model for r in plain} == {"dspex/sim-small"}
    assert {dict(r.kwargs)["temperature"] for r in plain} == {"0.33"}


class Switcher(dspy.Module):
    """A module that runs its second step under its own ``dspy.context(lm=...)``."""

    def __init__(self, lm: Any) -> None:
        super().__init__()
        self.first = dspy.ChainOfThought("question -> answer")
        self.second = dspy.Predict("question -> answer")
        self.other = lm

    def forward(self, question: str) -> Any:
        self.first(question=question)
        with dspy.context(lm=self.other):
            return self.second(question=question)


def test_bound_temperature_under_a_context_lm_inside_forward() -> None:
    """The LM an inner dspy.context picks runs with the bound keywords, as with config."""
    plain_env, bound_env = Env.fresh(), Env.fresh()
    values = Values(instructions=None, demos=None)
    for env, bound in ((plain_env, False), (bound_env, True)):
        dspy.configure(lm=env.lm, callbacks=[env.recorder])
        program = Switcher(env.large)
        if not bound:
            for predictor in program.predictors():
                predictor.config.update(values.config())
            ask(program, env)
            continue
        hooks = {h: VARIABLES[h] for h in ("temperature", "max_tokens")}
        with dspex.Session() as session:
            dspex.bind(program, **hooks)
            session.update({v.name: getattr(values, h) for h, v in hooks.items()})
            ask(program, env)
    plain = plain_env.recorder.requests
    assert_requests_equal(plain, bound_env.recorder.requests)
    assert {r.model for r in plain} == {"dspex/sim", "dspex/sim-large"}


# ------------------------------------------------------------------------------------------
# 5. teleprompters through dspex.compile


def through_compile(make: Callable[[Env], Any], **compile_kwargs: Any) -> Drive:
    """A drive: compile (plain: ``tp.compile``; bound: ``dspex.compile``), run the result.

    ``drive.states`` gets the compiled predictor's (instructions, demos) of each run.
    """

    def drive(program: dspy.Module, env: Env) -> None:
        teleprompter = make(env)
        if isinstance(program, BoundModule):
            result = dspex.compile(program, teleprompter, trainset=TRAIN, **compile_kwargs)
            compiled = result.program
        else:
            compiled = teleprompter.compile(program, trainset=TRAIN, **compile_kwargs)
        ask(compiled, env)
        predictor = compiled.predictors()[0]
        states.append((predictor.signature.instructions, [dict(d) for d in predictor.demos]))

    states: list[tuple[str, list[dict[str, Any]]]] = []
    drive.states = states  # type: ignore[attr-defined]
    return drive


# LM keywords bound outside the module would reach the optimizers' own predictors in the plain
# run only (its context wraps the whole run); these cases bind instructions and demos.
COMPILED = Values(temperature=None, max_tokens=None)


def test_infer_rules_through_compile() -> None:
    drive = through_compile(
        lambda env: dspy.InferRules(
            num_candidates=2,
            num_rules=3,
            num_threads=1,
            metric=answer_match,
            max_bootstrapped_demos=1,
            max_labeled_demos=1,
        )
    )
    requests = assert_same(lambda sig, bind: bind(dspy.Predict(sig)), drive, COMPILED)
    plain, bound = drive.states  # type: ignore[attr-defined]
    assert plain == bound
    assert "adhere to the following rules" in plain[0]
    assert any("adhere to the following rules" in c for r in requests for _, c in r.messages)


def infer_rules() -> Any:
    return dspy.InferRules(
        num_candidates=2, num_rules=3, num_threads=1, metric=answer_match,
        max_bootstrapped_demos=1, max_labeled_demos=1,
    )  # fmt: skip


def test_infer_rules_rolled_back_runs_the_values_again() -> None:
    """InferRules edits ``predictor.signature.instructions`` in place; after the compile is rolled
    back, the bound program sends what plain DSPy sends with the values V it holds again."""
    plain = run_plain(lambda sig, bind: bind(dspy.Predict(sig)), ask, COMPILED)

    def drive(program: dspy.Module, env: Env) -> None:
        dspex.compile(program, infer_rules(), trainset=TRAIN).rollback()
        del env.recorder.requests[:]
        ask(program, env)

    bound = run_bound(lambda sig, bind: bind(dspy.Predict(sig)), drive, COMPILED)
    assert_requests_equal(plain.recorder.requests, bound.recorder.requests)


def test_bootstrap_few_shot_with_optuna_through_compile() -> None:
    """One bootstrapped demo and no labeled ones: every optuna trial picks demo 0 (its sampler
    takes no seed), so the two runs are deterministic."""
    drive = through_compile(
        lambda env: dspy.BootstrapFewShotWithOptuna(
            metric=answer_match, max_labeled_demos=0, num_candidate_programs=2, num_threads=1
        ),
        max_demos=1,
    )
    requests = assert_same(lambda sig, bind: bind(dspy.Predict(sig)), drive, COMPILED)
    plain, bound = drive.states  # type: ignore[attr-defined]
    assert plain == bound
    assert len(plain[1]) == 1
    assert sum(role == "assistant" for role, _ in requests[-1].messages) == 1


def test_inner_context_lm_wins_over_a_bound_lm_choice() -> None:
    """The chosen LM is a context around the bound call: an inner dspy.context picks the LM."""

    def build(sig: Any, bind: Any) -> dspy.Module:
        return bind(Switcher(Env.fresh().prompt))

    values = Values(temperature=None, max_tokens=None, instructions=None, demos=None, lm="large")
    requests = assert_same(build, ask, values)
    assert {r.model for r in requests} == {"dspex/sim-large", "dspex/sim-small"}


def test_instructions_edited_in_place() -> None:
    """``predictor.signature.instructions = ...`` (what InferRules does) sticks, as in DSPy."""

    def run(program: dspy.Module, env: Env) -> None:
        program(question=question(0))
        program.signature.instructions = "Reply in one word."
        program(question=question(1))
        program(question=question(2))

    requests = assert_same(lambda sig, bind: bind(dspy.Predict(sig)), run)
    assert "Reply in one word." in requests[-1].messages[0][1]
