"""Bound programs under contention: calls from many threads and tasks, and saves made while
other threads change the values.

Bound LM copies share the base LM's ``history`` and ``callbacks`` lists; the same calls made
from many threads record the same entries as plain DSPy with the keywords as predictor
``config`` (every call on the one LM).

A bound call reads one snapshot of its variables; a save (``dump_state``/``save``) writes the
instructions and demos each predictor runs with into DSPy's own fields and the variables into
``dspex_variables`` sections, so it must read one snapshot too: a save mixing two versions
loads as a compiled program that no longer follows its variables (or, in plain DSPy, runs
instructions its saved variables do not hold).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dspy
import pytest
from dspy.clients.base_lm import GLOBAL_HISTORY
from dspy.utils.callback import BaseCallback
from support.bridge import served
from support.fidelity import SIGNATURE, VARIABLES, lookup, question

import dspex
from dspex.sim import SimLM

pytestmark = pytest.mark.timeout(90)

INSTRUCTIONS = VARIABLES["instructions"]
DEMOS = VARIABLES["demos"]


@pytest.fixture(scope="module", name="store")
def store_address() -> Iterator[str]:
    """A real session store server on loopback (its own in-process engine)."""
    with served() as server:
        yield f"grpc://{server.address.removeprefix('grpc://')}"


class Answerer(dspex.Program):
    """A Program whose ChainOfThought follows the instructions and demos variables."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.bind(
            dspy.ChainOfThought(SIGNATURE), instructions=INSTRUCTIONS, demos=DEMOS
        )

    def forward(self, question: str) -> Any:
        return self.answer(question=question)


def _react() -> dspy.Module:
    module = dspy.ReAct(SIGNATURE, tools=[lookup])
    return dspex.bind(module, instructions=INSTRUCTIONS, demos=DEMOS)


def _labels(state: dict[str, Any]) -> set[str]:
    """Every version label a saved state holds: instructions and demos in DSPy's fields and in
    each ``dspex_variables`` section (a consistent save holds one)."""
    labels: set[str] = set()
    sections = [state.get("dspex_variables") or {}]
    for entry in state.values():
        if isinstance(entry, dict) and "signature" in entry:
            instructions = entry["signature"]["instructions"]
            labels.add(instructions.split()[0])  # ReAct adds its protocol after it
            labels |= {demo["answer"] for demo in entry["demos"]}
            sections.append(entry["dspex_variables"])
    for section in sections:
        if INSTRUCTIONS.name in section:
            labels.add(section[INSTRUCTIONS.name]["value"])
        if DEMOS.name in section:
            labels |= {demo["answer"] for demo in section[DEMOS.name]["value"]}
    return labels


def _changing(session: dspex.Session) -> Callable[[], None]:
    """Start a thread setting both variables to a new version label in a loop; returns stop."""
    done = threading.Event()

    def write() -> None:
        i = 0
        while not done.is_set():
            i += 1
            label = f"v{i}"
            demos = [{"question": "What is 2 + 2?", "answer": label}]
            session.update({INSTRUCTIONS.name: label, DEMOS.name: demos}, atomic=True)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(10)

    return stop


@pytest.mark.parametrize("where", ["in-process", "store"])
@pytest.mark.parametrize("build", [Answerer, _react], ids=["Program", "bound ReAct"])
def test_a_save_made_while_the_values_change_is_one_snapshot(
    build: Callable[[], dspy.Module], where: str, request: pytest.FixtureRequest
) -> None:
    """Saves made while another thread updates the variables (atomically, to one version) each
    hold one version: in every predictor's instructions and demos and in every section."""
    store = request.getfixturevalue("store") if where == "store" else None
    with dspex.Session(store) as session:
        program = build()
        session.update({INSTRUCTIONS.name: "v0", DEMOS.name: []}, atomic=True)
        stop = _changing(session)
        torn: list[set[str]] = []
        saves = 0
        deadline = time.monotonic() + 8
        try:
            while saves < 300 and time.monotonic() < deadline:
                labels = _labels(program.dump_state())
                saves += 1
                if len(labels) > 1:
                    torn.append(labels)
        finally:
            stop()
    assert saves >= 50, f"only {saves} saves in time"
    assert not torn, f"{len(torn)} of {saves} saves mixed versions, e.g. {sorted(torn[0])}"


# ------------------------------------------------------------------------------------------
# calls from many threads and tasks: LM history and callbacks, plain vs bound

CALLS = 48
TEMPERATURE = VARIABLES["temperature"]


class Counting(BaseCallback):
    """Counts LM call starts and ends (a callback on the LM object)."""

    def __init__(self) -> None:
        self.starts = 0
        self.ends = 0
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._lock:
            self.starts += 1

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        with self._lock:
            self.ends += 1


def _parallel(program: dspy.Module) -> None:
    pairs = [(program, {"question": f"{question(i)} ({i})"}) for i in range(CALLS)]
    dspy.Parallel(num_threads=8, disable_progress_bar=True)(pairs)


def _evaluate(program: dspy.Module) -> None:
    devset = [
        dspy.Example(question=f"{question(i)} ({i})", answer="x").with_inputs("question")
        for i in range(CALLS)
    ]
    dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: 0.0, num_threads=8)(program)


def _tasks(program: dspy.Module) -> None:
    async def run() -> None:
        calls = (program.acall(question=f"{question(i)} ({i})") for i in range(CALLS))
        await asyncio.gather(*calls)

    asyncio.run(run())


def _observed(how: Callable[[dspy.Module], None], bound: bool, edit: bool) -> tuple[int, ...]:
    """(LM history entries, global history entries, callback starts, ends) of ``CALLS`` calls;
    ``edit``: another thread keeps adding and removing a keyword on the LM meanwhile."""
    counting = Counting()
    lm = SimLM("dspex/sim", cache=False, callbacks=[counting])
    dspy.configure(lm=lm)
    before = len(GLOBAL_HISTORY)
    done = threading.Event()

    def edit_keywords() -> None:
        while not done.is_set():
            lm.kwargs["top_p"] = 0.9
            lm.kwargs.pop("top_p", None)

    editor = threading.Thread(target=edit_keywords, daemon=True)
    with dspex.Session() as session:
        program = dspy.Predict(SIGNATURE)
        if bound:
            dspex.bind(program, temperature=TEMPERATURE)
            session.update({TEMPERATURE.name: 0.33})
        else:
            program.config["temperature"] = 0.33
        if edit:
            editor.start()
        try:
            how(program)
        finally:
            done.set()
            if edit:
                editor.join(10)
    return len(lm.history), len(GLOBAL_HISTORY) - before, counting.starts, counting.ends


@pytest.mark.parametrize("edit", [False, True], ids=["", "keywords edited meanwhile"])
@pytest.mark.parametrize(
    "how", [_parallel, _evaluate, _tasks], ids=["dspy.Parallel", "Evaluate", "async tasks"]
)
def test_history_and_callbacks_of_calls_from_many_threads(
    how: Callable[[dspy.Module], None], edit: bool
) -> None:
    """Every call is recorded once in the LM's history and the global history and reaches the
    LM's callbacks once, as in plain DSPy, also while the LM's keywords are edited (a new
    bound copy is made then, sharing the same lists); no call fails."""
    plain = _observed(how, bound=False, edit=edit)
    bound = _observed(how, bound=True, edit=edit)
    assert plain == (CALLS,) * 4
    assert bound == plain
