"""Optimizers meet variables: compiled values win, warn when they differ, publish atomically."""

from __future__ import annotations

import contextvars
import threading

import dspy
import pytest
from support.fidelity import DEMOS, Env

import dspex
from dspex.errors import BatchUpdateError, BindingError
from dspex.sim import SimLM, load_devset

pytestmark = pytest.mark.timeout(60)

TRAIN = load_devset("arithmetic")[:4]
INSTRUCTIONS = dspex.Variable(str, "Answer briefly.", name="p_instructions")
DEMOS_VAR = dspex.Variable(list, [], name="p_demos")
TEMPERATURE = dspex.Variable(float, 0.5, name="p_temperature", min=0.0, max=2.0)


def system_and_turns(env: Env) -> tuple[str, int]:
    messages = env.recorder.requests[-1].messages
    return messages[0][1], sum(role == "assistant" for role, _ in messages)


@pytest.fixture
def env() -> Env:
    env = Env.fresh()
    dspy.configure(lm=env.lm, callbacks=[env.recorder])
    return env


def compiled_program() -> dspy.Module:
    program = dspex.bind(
        dspy.Predict("question -> answer"), instructions=INSTRUCTIONS, demos=DEMOS_VAR
    )
    compiled = dspy.LabeledFewShot(k=2).compile(program, trainset=TRAIN)
    compiled.signature = compiled.signature.with_instructions("Compiled: reply with a number.")
    return compiled


def test_compiled_values_win_and_a_differing_variable_is_named_in_a_warning(env: Env) -> None:
    with dspex.Session():
        compiled = compiled_program()
        with pytest.warns(UserWarning) as warned:
            compiled(question="What is 2 + 2?")
    named = " ".join(str(w.message) for w in warned)
    assert "'p_demos'" in named and "'p_instructions'" in named
    system, turns = system_and_turns(env)
    assert "Compiled: reply with a number." in system
    assert turns == 2


@pytest.mark.filterwarnings("ignore:a bound predictor holds")
def test_publish_writes_one_atomic_batch_and_rollback_restores(env: Env) -> None:
    with dspex.Session() as session:
        compiled = compiled_program()
        fresh = dspex.bind(  # what another process runs: the program as it was before compiling
            dspy.Predict("question -> answer"), instructions=INSTRUCTIONS, demos=DEMOS_VAR
        )
        expected = [d["question"] for d in compiled.dump_state()["demos"]]
        published = dspex.publish(compiled)
        records = published.records
        assert set(records) == {"p_instructions", "p_demos"}
        assert [len(session.history(n)) for n in records] == [2, 2]  # one write each
        assert session.get("p_instructions") == "Compiled: reply with a number."
        assert [d["question"] for d in session.get("p_demos")] == expected

        fresh(question="What is 2 + 2?")  # the next call anywhere uses the published values
        assert system_and_turns(env) == (system_and_turns(env)[0], 2)
        assert "Compiled: reply with a number." in system_and_turns(env)[0]

        published.rollback()
        assert session.get("p_instructions") == "Answer briefly."
        assert session.get("p_demos") == []
        compiled(question="What is 2 + 2?")  # released by publish: follows the variables again
        assert system_and_turns(env)[1] == 0
        assert "Answer briefly." in system_and_turns(env)[0]

        again = dspex.publish(compiled_program())
        session.set("p_instructions", "Someone else's text.")
        with pytest.raises(BatchUpdateError, match="p_instructions"):
            again.rollback()  # a later write is never silently undone
        assert session.get("p_instructions") == "Someone else's text."


def test_publish_refuses_two_different_compiled_values_for_one_variable(env: Env) -> None:
    class Two(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = dspy.Predict("question -> answer")
            self.b = dspy.Predict("question -> answer")

    with dspex.Session() as session:
        program = dspex.bind(Two(), demos=DEMOS_VAR)
        program.a.demos = [DEMOS[0]]
        program.b.demos = [DEMOS[1]]
        with pytest.raises(BindingError, match=r"a and b hold different compiled values"):
            dspex.publish(program)
        assert session.get("p_demos") == []


def test_the_default_of_a_demos_binding_does_not_discard_compiled_demos(env: Env) -> None:
    """Defect 4: a demos variable left at [] discarded LabeledFewShot's demos."""
    with dspex.Session():
        program = dspex.bind(dspy.Predict("question -> answer"), demos=DEMOS_VAR)
        compiled = dspy.LabeledFewShot(k=3).compile(program, trainset=TRAIN)
        with pytest.warns(UserWarning, match="p_demos"):
            compiled(question="What is 2 + 2?")
    assert system_and_turns(env)[1] == 3


def test_a_predictor_config_under_a_bound_keyword_does_not_hide_the_variable(env: Env) -> None:
    with dspex.Session() as session:
        program = dspex.bind(
            dspy.Predict("question -> answer", temperature=1.5), temperature=TEMPERATURE
        )
        session.set("p_temperature", 0.25)
        program(question="What is 2 + 2?")
    assert dict(env.recorder.requests[-1].kwargs)["temperature"] == "0.25"


@pytest.mark.filterwarnings("ignore:a bound predictor holds")
def test_publish_writes_as_the_optimization_lock_holder(env: Env) -> None:
    with dspex.Session() as session:
        compiled = compiled_program()
        with session.optimizing("p_instructions", "p_demos", optimizer_id="tune"):
            dspex.publish(compiled)
        assert session.get("p_instructions") == "Compiled: reply with a number."

        other = compiled_program()
        other.signature = other.signature.with_instructions("Other text.")
        held, done = threading.Event(), threading.Event()

        def hold_lock() -> None:
            with session.optimizing("p_instructions", optimizer_id="someone-else"):
                held.set()
                done.wait(30)

        holder = threading.Thread(target=contextvars.copy_context().run, args=(hold_lock,))
        holder.start()
        try:
            assert held.wait(30)
            with pytest.raises(BatchUpdateError, match=r"locked by optimizer 'someone-else'"):
                dspex.publish(other)
        finally:
            done.set()
            holder.join(30)
        assert session.get("p_instructions") == "Compiled: reply with a number."  # nothing applied


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_workers_use_published_values_on_their_next_call() -> None:
    """A Remote worker process runs the uncompiled program and follows publish and rollback."""
    temperature = dspex.Variable(float, 0.7, name="w_temperature", min=0.0, max=2.0)
    program = dspex.bind(dspy.ChainOfThought("question -> answer"), temperature=temperature)
    ask = {"question": "What is 12 * 7?"}
    with (
        dspex.Session(),
        dspy.context(lm=SimLM("dspex/sim")),
        dspex.Remote(program, workers=1, timeout=60) as remote,
    ):
        assert "temperature 0.70" in remote(**ask).reasoning
        compiled = program.deepcopy()
        compiled.predict.config = {"temperature": 0.25}  # a compiled config for the hook
        published = dspex.publish(compiled)
        assert "temperature 0.25" in remote(**ask).reasoning
        published.rollback()
        assert "temperature 0.70" in remote(**ask).reasoning
