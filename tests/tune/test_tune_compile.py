"""``dspex.compile``: DSPy teleprompters on a live bound program, published to every worker.

Each case compiles ``compile_targets.QA`` (instructions and demos bound to session variables) on
the simulation LM, while a ``dspex.Remote`` of the *uncompiled* program serves on two spawned
workers. The published values must be exactly what the teleprompter compiled (its predictor's
state), and every worker's next LM request must be what plain DSPy sends from a ``dspy.Predict``
loaded with that compiled state.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import dspy
import pytest
from compile_targets import INSTRUCTIONS, bound_qa, demo_turns, plain_messages
from dspy.teleprompt import Teleprompter

import dspex
from dspex.errors import LockedError, TuningError
from dspex.sim import SimLM, answer_match, load_devset

pytestmark = pytest.mark.filterwarnings("ignore:a bound predictor holds")

TRAIN = load_devset("arithmetic")[:4]
QUESTIONS = ["What is 12 * 7?", "What is 9 + 10?", "What is 6 * 6?", "What is 40 - 2?"]


class Seen:
    """A metric (answer_match) recording where each prediction ran and the lock it ran under."""

    def __init__(self, session: dspex.Session, variable: str) -> None:
        self.session = session
        self.variable = variable
        self.calls: list[tuple[int, bool]] = []  # (pid, traced)
        self.locks: list[Mapping[str, Any] | None] = []
        self._lock = threading.Lock()

    def __call__(self, example: Any, prediction: Any, trace: Any = None) -> bool:
        lock = self.session.variable(self.variable).lock
        with self._lock:
            self.calls.append((prediction.pid, trace is not None))
            self.locks.append(lock)
        return answer_match(example, prediction)

    def pids(self, *, traced: bool) -> set[int]:
        return {pid for pid, was_traced in self.calls if was_traced == traced}


@pytest.fixture
def served() -> Iterator[tuple[dspex.Session, dspex.Remote]]:
    """A session on the simulation LM and a Remote of the uncompiled program on two workers."""
    with (
        dspex.Session() as session,
        dspy.context(lm=SimLM("dspex/sim")),
        dspex.Remote(bound_qa("t"), workers=2, timeout=60) as remote,
    ):
        before = remote(question=QUESTIONS[0])
        assert demo_turns(before.messages) == 0 and INSTRUCTIONS in before.messages[0][1]
        yield session, remote


def compiled_state(result: Any) -> dict[str, Any]:
    """What the teleprompter's program ran with: its predictor's state, where the teleprompter
    assigned nothing new (nothing published) the starting values of the variables."""
    state: dict[str, Any] = result.program.predict.dump_state()  # its own values
    if "t_instructions" not in result.records:
        state["signature"]["instructions"] = INSTRUCTIONS
    if "t_demos" not in result.records:
        state["demos"] = []
    return state


def assert_published(session: dspex.Session, result: Any) -> dict[str, Any]:
    """The session holds exactly the compiled instructions and demos; returns that state."""
    state = compiled_state(result)
    assert session.get("t_instructions") == state["signature"]["instructions"]
    assert session.get("t_demos") == state["demos"]
    for name, record in result.records.items():
        before, after = session.history(name)[-2:]  # the run wrote once: the publish batch
        assert (after.version, after.value) == (record.version, record.value)
        assert before.version == record.version - 1
        assert before.value == result.published.previous[name]
        assert record.lock is not None and record.lock["optimizer_id"] == result.optimizer_id
    assert session.variable("t_instructions").lock is None  # released after the run
    return state


def assert_every_worker_uses(remote: dspex.Remote, state: dict[str, Any]) -> None:
    """Each worker's next call sends what plain DSPy sends with the compiled state."""
    calls: list[dict[str, Any]] = [{"question": q, "delay": 0.3} for q in QUESTIONS]
    predictions = remote.map(calls, progress=False)
    assert {p.pid for p in predictions} == set(remote.pids)
    for call, prediction in zip(calls, predictions, strict=True):
        assert prediction.messages == plain_messages(state, call["question"])


@pytest.mark.timeout(120)
def test_bootstrap_few_shot_publishes_its_demos_to_every_worker(
    served: tuple[dspex.Session, dspex.Remote],
) -> None:
    session, remote = served
    program = bound_qa("t")
    teleprompter = dspy.BootstrapFewShot(
        metric=answer_match, max_bootstrapped_demos=2, max_labeled_demos=0, max_rounds=1
    )
    result = dspex.compile(program, teleprompter, trainset=TRAIN)

    assert set(result.records) == {"t_demos"}  # BootstrapFewShot compiles demos only
    state = assert_published(session, result)
    assert state["demos"] and all(d.get("augmented") for d in state["demos"])  # bootstrapped
    assert_every_worker_uses(remote, state)
    assert demo_turns(remote(question=QUESTIONS[1]).messages) == len(state["demos"])

    result.rollback()  # one batch back: every worker's next call has no demos again
    assert session.get("t_demos") == []
    assert demo_turns(remote(question=QUESTIONS[1]).messages) == 0
    assert demo_turns(program(question=QUESTIONS[1]).messages) == 0  # the program follows too


@pytest.mark.timeout(150)
def test_copro_scores_on_workers_under_the_lock_and_publishes_its_instructions(
    served: tuple[dspex.Session, dspex.Remote],
) -> None:
    """Defect: publish walked COPRO's candidate_programs too and refused the compiled program."""
    session, remote = served
    metric = Seen(session, "t_instructions")
    teleprompter = dspy.COPRO(
        prompt_model=SimLM("dspex/sim-small"), metric=metric, breadth=3, depth=1
    )
    result = dspex.compile(
        bound_qa("t"), teleprompter, trainset=TRAIN, workers=2,
        eval_kwargs={"num_threads": 2, "display_progress": False},
    )  # fmt: skip

    state = assert_published(session, result)
    assert set(result.records) == {"t_instructions"}
    assert state["signature"]["instructions"] != INSTRUCTIONS
    assert_every_worker_uses(remote, state)

    # Every scored prediction ran on an evaluation worker, never here; the metric ran here.
    assert metric.pids(traced=True) == set()
    workers = metric.pids(traced=False)
    assert os.getpid() not in workers and len(workers) == 2
    assert result.remote_calls == len(metric.calls) == 3 * len(TRAIN)
    # Scored under the lock, with the progress published on it.
    assert all(lock and lock["optimizer_id"] == "dspy:COPRO" for lock in metric.locks)
    progress = [lock["progress"] for lock in metric.locks if lock]
    assert progress[0]["teleprompter"] == "COPRO" and progress[0]["state"] == "compiling"
    assert [p["evaluations"] for p in progress[:: len(TRAIN)]] == [0, 1, 2]
    # The candidates COPRO keeps on the result run here once the run's workers are gone.
    candidate = result.program.candidate_programs[-1]["program"]
    assert candidate(question=QUESTIONS[2]).pid == os.getpid()


@pytest.mark.timeout(180)
def test_mipro_v2_bootstraps_here_scores_on_workers_and_publishes_both(
    served: tuple[dspex.Session, dspex.Remote],
) -> None:
    session, remote = served
    # The simulation penalizes "creative"/"guess": any instruction MIPROv2 proposes wins.
    session.set("t_instructions", "Take a creative guess.")
    metric = Seen(session, "t_demos")
    teleprompter = dspy.MIPROv2(
        metric=metric, prompt_model=SimLM("dspex/sim-small"), auto=None, num_candidates=3,
        num_threads=2, max_bootstrapped_demos=1, max_labeled_demos=1, seed=0, verbose=False,
    )  # fmt: skip
    result = dspex.compile(
        bound_qa("t"), teleprompter, trainset=TRAIN, workers=2, num_trials=2, minibatch=False
    )

    state = assert_published(session, result)
    assert set(result.records) in ({"t_instructions"}, {"t_instructions", "t_demos"})
    assert "guess" not in state["signature"]["instructions"]
    assert_every_worker_uses(remote, state)
    assert metric.pids(traced=True) == {os.getpid()}  # bootstrapping needs the trace: here
    workers = metric.pids(traced=False)
    assert workers and os.getpid() not in workers  # Evaluate's scoring: on the workers
    assert result.remote_calls == sum(not traced for _, traced in metric.calls)


def test_a_held_variable_gets_the_policy_the_run_chose() -> None:
    with dspex.Session() as session:
        session.register("t_demos", list, [])
        held_by_another(session)


def held_by_another(session: dspex.Session) -> None:
    """``fail`` refuses (nothing written), ``preempt`` takes the lock and publishes."""
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with session.optimizing("t_demos", optimizer_id="someone-else"):
            held.set()
            done.wait(30)

    holder = threading.Thread(target=contextvars.copy_context().run, args=(hold,))
    holder.start()
    try:
        assert held.wait(30)
        labeled = dspy.LabeledFewShot(k=2)
        with pytest.raises(LockedError, match="someone-else"):
            dspex.compile(bound_qa("t"), labeled, trainset=TRAIN)
        assert session.get("t_demos") == [] and len(session.history("t_demos")) == 1
        result = dspex.compile(bound_qa("t"), labeled, trainset=TRAIN, policy="preempt")
        assert len(session.get("t_demos")) == 2 and result.optimizer_id == "dspy:LabeledFewShot"
    finally:
        done.set()
        holder.join(30)


class Breaks(Teleprompter):  # type: ignore[misc]
    """A teleprompter that assigns demos on its copy, then fails."""

    def compile(self, student: Any, *, trainset: Any, **kwargs: Any) -> Any:
        copy = student.deepcopy()
        copy.predict.demos = [trainset[0]]
        raise RuntimeError("the teleprompter broke")


def test_a_failing_teleprompter_publishes_nothing_and_releases_the_lock() -> None:
    with dspex.Session() as session:
        program = bound_qa("t")
        with pytest.raises(RuntimeError, match="the teleprompter broke"):
            dspex.compile(program, Breaks(), trainset=TRAIN)
        assert session.get("t_demos") == [] and len(session.history("t_demos")) == 1
        assert session.variable("t_demos").lock is None
        session.set("t_demos", [])  # anyone may write it again


class PreemptedMidRun(Teleprompter):  # type: ignore[misc]
    """Compiles demos while another optimizer preempts the lock on them (and holds it)."""

    def __init__(self, session: dspex.Session, done: threading.Event) -> None:
        self.session, self.done = session, done

    def compile(self, student: Any, *, trainset: Any, **kwargs: Any) -> Any:
        held = threading.Event()

        def urgent() -> None:
            with self.session.optimizing("t_demos", optimizer_id="urgent", policy="preempt"):
                held.set()
                self.done.wait(30)

        threading.Thread(target=contextvars.copy_context().run, args=(urgent,)).start()
        assert held.wait(30)
        compiled = student.deepcopy()
        compiled.predict.demos = [trainset[0]]
        return compiled


def test_a_run_preempted_mid_run_publishes_nothing() -> None:
    with dspex.Session() as session:
        done = threading.Event()
        try:
            with pytest.raises(LockedError, match="urgent"):
                dspex.compile(bound_qa("t"), PreemptedMidRun(session, done), trainset=TRAIN)
            assert session.get("t_demos") == [] and len(session.history("t_demos")) == 1
            assert session.get("t_instructions") == INSTRUCTIONS
        finally:
            done.set()


def test_bad_input_is_refused_before_anything_starts() -> None:
    with dspex.Session() as session:
        session.register("t_demos", list, [])
        labeled = dspy.LabeledFewShot(k=1)
        unbound = dspy.Predict("question -> answer")
        with pytest.raises(TuningError, match="bind them first"):
            dspex.compile(unbound, labeled, trainset=TRAIN)
        with pytest.raises(TuningError, match="workers must be an integer >= 0"):
            dspex.compile(bound_qa("t"), labeled, trainset=TRAIN, workers=-1)
        with pytest.raises(TuningError, match="trainset is empty"):
            dspex.compile(bound_qa("t"), labeled, trainset=[])
        with pytest.raises(TuningError, match="compile\\(\\) method"):
            dspex.compile(bound_qa("t"), "COPRO", trainset=TRAIN)
        assert session.get("t_demos") == [] and session.variable("t_demos").lock is None
