"""Bound values in DSPy's thread pools (Parallel, Evaluate), asyncify and async acall."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM
from support.binding import CallRecorder, objective

import dspex
from dspex.errors import SessionError

pytestmark = pytest.mark.timeout(120)

TEMPERATURE = dspex.Variable(float, 0.5, name="temperature", min=0.0, max=2.0)
INSTRUCTIONS = dspex.Variable(str, "I0", name="instructions")
MODEL = dspex.Variable(dspex.Choice("dspex/sim", "dspex/sim-large"), "dspex/sim", name="model")


def bound_predict() -> dspex.binding.BoundModule:
    return dspex.bind(
        dspy.Predict("question -> answer"),
        temperature=TEMPERATURE,
        instructions=INSTRUCTIONS,
        lm=MODEL,
    )


def seen(call: Any) -> tuple[float, str, str]:
    return call.kwargs["temperature"], objective(call.system), call.model


def test_evaluate_threads_see_the_value_of_each_moment(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    program = bound_predict()
    devset = [
        dspy.Example(question=f"What is {i} + 1?").with_inputs("question") for i in range(12)
    ]
    evaluate = dspy.Evaluate(
        devset=devset, metric=lambda e, p, t=None: 1.0, num_threads=4, display_progress=False
    )
    with dspy.context(callbacks=[recorder]):
        evaluate(program)
        session.update({"temperature": 0.1, "instructions": "I1", "model": "dspex/sim-large"})
        evaluate(program)
    first, second = recorder.calls[:12], recorder.calls[12:]
    assert {seen(c) for c in first} == {(0.5, "I0", "dspex/sim")}
    assert {seen(c) for c in second} == {(0.1, "I1", "dspex/sim-large")}
    assert len({c.thread for c in recorder.calls}) > 1  # really ran on several threads
    assert threading.get_ident() not in {c.thread for c in recorder.calls}


def test_parallel_threads_with_concurrent_sets_see_consistent_live_values(
    session: dspex.Session,
) -> None:
    """Each LM call, once done, writes the next (temperature, instructions) pair atomically.

    Every call must see one consistent pair (one snapshot per call), and a thread's next call
    must see at least the pair written after its previous call (values are read at call time).
    """
    pairs = [(round(0.01 * k, 2), f"I{k}") for k in range(200)]
    counter = itertools.count(1)
    observed: list[tuple[int, int, int]] = []  # (thread, index seen, index written after)
    torn: list[tuple[float, str]] = []
    lock = threading.Lock()

    class LiveWriter(dspy.utils.callback.BaseCallback):  # type: ignore[name-defined,misc]
        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            temperature = {**instance.kwargs, **inputs["kwargs"]}["temperature"]
            instructions = objective(inputs["messages"][0]["content"])
            index = int(instructions[1:])
            if pairs[index] != (temperature, instructions):
                torn.append((temperature, instructions))  # callbacks cannot raise into DSPy
            with lock:
                written = next(counter)
                session.update(
                    {"temperature": pairs[written][0], "instructions": pairs[written][1]}
                )
                observed.append((threading.get_ident(), index, written))

    session.register("temperature", float, 0.0, min=0.0, max=2.0)
    session.register("instructions", str, "I0")
    program = dspex.bind(
        dspy.Predict("question -> answer"), temperature=TEMPERATURE, instructions=INSTRUCTIONS
    )
    parallel = dspy.Parallel(num_threads=4, disable_progress_bar=True)
    with dspy.context(lm=DummyLM({"": {"answer": "a"}}), callbacks=[LiveWriter()]):
        parallel([(program, {"question": f"q{i}"}) for i in range(40)])
    assert len(observed) == 40
    assert torn == [], "a call saw temperature and instructions from different writes"
    last_written: dict[int, int] = {}
    for thread, index, written in observed:
        assert index >= last_written.get(thread, 0), "a thread read a value older than its write"
        last_written[thread] = written
    assert len({index for _, index, _ in observed}) > 10  # values really moved during the run
    assert len(last_written) > 1


def test_acall_reads_values_at_call_time(session: dspex.Session, recorder: CallRecorder) -> None:
    program = bound_predict()

    async def run() -> None:
        await program.acall(question="What is 1 + 1?")
        session.update({"temperature": 1.25, "instructions": "I2", "model": "dspex/sim-large"})
        await program.acall(question="What is 1 + 1?")
        results = await asyncio.gather(*(program.acall(question=f"q{i}") for i in range(4)))
        assert len(results) == 4

    with dspy.context(callbacks=[recorder]):
        asyncio.run(run())
    assert seen(recorder.calls[0]) == (0.5, "I0", "dspex/sim")
    assert {seen(c) for c in recorder.calls[1:]} == {(1.25, "I2", "dspex/sim-large")}


def test_asyncify_runs_in_a_worker_thread_with_the_session(
    session: dspex.Session, recorder: CallRecorder
) -> None:
    program = dspy.asyncify(bound_predict())
    session.set("temperature", 0.3)
    with dspy.context(callbacks=[recorder]):
        asyncio.run(program(question="What is 3 + 3?"))
    assert seen(recorder.calls[0]) == (0.3, "I0", "dspex/sim")
    assert recorder.calls[0].thread != threading.get_ident()


def test_plain_threads_need_a_copied_context(session: dspex.Session) -> None:
    program = dspex.bind(dspy.Predict("question -> answer"), temperature=TEMPERATURE)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["answer"] = program(question="What is 2 + 2?").answer
        except SessionError as exc:
            outcome["error"] = exc

    with dspy.context(lm=DummyLM({"": {"answer": "4"}})):
        bare = threading.Thread(target=call)
        bare.start()
        bare.join(30)
        assert isinstance(outcome.pop("error"), SessionError)
        copied = threading.Thread(target=contextvars.copy_context().run, args=(call,))
        copied.start()
        copied.join(30)
    assert outcome == {"answer": "4"}


SESSION_BEFORE_DSPY = """
import dspex                                     # dspy is not imported yet
assert "dspy" not in __import__("sys").modules
with dspex.Session() as session:                 # so the session is only in dspex's ContextVar
    import dspy
    from dspy.utils import DummyLM

    temperature = dspex.Variable(float, 0.3, name="temperature")
    inner = dspex.bind(dspy.Predict("question -> answer"), temperature=temperature)

    class FanOut(dspy.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, questions):
            pairs = [(self.inner, {"question": q}) for q in questions]
            return dspy.Parallel(num_threads=3, disable_progress_bar=True)(pairs)

    class Sent(dspy.utils.callback.BaseCallback):
        kwargs = []

        def on_lm_start(self, call_id, instance, inputs):
            self.kwargs.append({**instance.kwargs, **inputs["kwargs"]})

    outer = dspex.bind(FanOut(), max_tokens=dspex.Variable(int, 9, name="max_tokens"))
    with dspy.context(lm=DummyLM({"": {"answer": "a"}}), callbacks=[Sent()]):
        outer(questions=["q1", "q2", "q3", "q4", "q5", "q6"])
    kwargs = Sent.kwargs
    assert kwargs == [{"max_tokens": 9, "temperature": 0.3}] * 6, kwargs
print("ok")
"""


def test_threads_started_inside_a_bound_call_resolve_in_its_session() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", SESSION_BEFORE_DSPY],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
