"""Differential cases, round 3: async calls, the async LM path, and streaming.

Plain DSPy is the oracle (see :mod:`support.fidelity`): every case runs once plain, with the
values configured the DSPy way, and once bound with the values in a session, and compares the
LM requests and what the program gave back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dspy
import pytest
from dspy.streaming import StatusMessage, StatusMessageProvider, StreamListener, StreamResponse
from dspy.utils.exceptions import AdapterParseError
from support.bridge import served
from support.fidelity import (
    SIGNATURE,
    VARIABLES,
    Drive,
    Env,
    Values,
    assert_requests_equal,
    assert_same,
    kwargs_of,
    lookup,
    question,
    run_bound,
    run_plain,
)

import dspex

pytestmark = pytest.mark.timeout(60)


class Outcomes:
    """What each run of a case gave back (results, stream items), to compare plain and bound."""

    def __init__(self) -> None:
        self.runs: list[list[Any]] = []

    def drive(self, drive: Drive) -> Drive:
        """``drive``, recording into a new run."""

        def run(program: dspy.Module, env: Env) -> None:
            self.runs.append([])
            drive(program, env)

        return run

    def record(self, item: Any) -> None:
        self.runs[-1].append(item)

    def check(self) -> list[Any]:
        """Assert both runs gave back the same (something); return the plain run's."""
        assert len(self.runs) == 2 and self.runs[0], self.runs
        assert self.runs[0] == self.runs[1]
        return self.runs[0]


# ------------------------------------------------------------------------------------------
# 1. async calls


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
def test_concurrent_acalls(values: Values) -> None:
    """Four ``acall`` tasks at once (asyncio.gather), each inside its own bound call."""
    outcomes = Outcomes()

    @outcomes.drive
    def run(program: dspy.Module, env: Env) -> None:
        async def main() -> list[Any]:
            return await asyncio.gather(*(program.acall(question=question(i)) for i in range(4)))

        for prediction in asyncio.run(main()):
            outcomes.record(dict(prediction))

    requests = assert_same(
        lambda sig, bind: bind(dspy.ChainOfThought(sig)), run, values, ordered=False
    )
    outcomes.check()
    assert {r.model for r in requests} == {f"dspex/sim{'-large' if values.lm else ''}"}


class AsyncPipeline(dspy.Module):
    """Two predictors in ``aforward``, the second one with an LM call of its own in between."""

    def __init__(self, sig: Any) -> None:
        super().__init__()
        self.draft = dspy.ChainOfThought(sig)
        self.final = dspy.Predict(sig)

    async def aforward(self, question: str) -> Any:
        draft = await self.draft.acall(question=question)
        # the async LM path, called directly: the LM in effect, as DSPy hands it out
        await dspy.settings.lm.acall(messages=[{"role": "user", "content": draft.answer}])
        return await self.final.acall(question=question)

    def forward(self, question: str) -> Any:
        draft = self.draft(question=question)
        dspy.settings.lm(messages=[{"role": "user", "content": draft.answer}])
        return self.final(question=question)


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
@pytest.mark.parametrize("style", ["acall", "asyncify", "sync"])
def test_a_custom_module_with_direct_lm_calls(style: str, values: Values) -> None:
    """``lm.acall``/``lm(...)`` called directly inside a bound module get the bound keywords
    and the chosen LM, as the LM of ``dspy.context(lm=lm.copy(**kwargs))`` does in DSPy."""
    outcomes = Outcomes()

    @outcomes.drive
    def run(program: dspy.Module, env: Env) -> None:
        if style == "sync":
            for i in range(2):
                outcomes.record(dict(program(question=question(i))))
            return
        call = program.acall if style == "acall" else dspy.asyncify(program)

        async def main() -> None:
            for i in range(2):
                outcomes.record(dict(await call(question=question(i))))

        asyncio.run(main())

    requests = assert_same(lambda sig, bind: bind(AsyncPipeline(sig)), run, values)
    outcomes.check()
    direct = [r for r in requests if len(r.messages) == 1]
    assert len(direct) == 2
    assert {dict(r.kwargs)["temperature"] for r in direct} == {"0.33"}


def test_async_react_with_an_async_tool() -> None:
    """ReAct's ``acall`` with an async tool, bound directly (its tool protocol kept)."""
    outcomes = Outcomes()

    async def lookup(topic: str) -> str:
        """Look a topic up."""
        return f"notes about {topic}"

    @outcomes.drive
    def run(program: dspy.Module, env: Env) -> None:
        async def main() -> None:
            prediction = await program.acall(question=question(1))
            outcomes.record(prediction.answer)
            outcomes.record(list(prediction.trajectory))

        asyncio.run(main())

    def build(sig: Any, bind: Any) -> dspy.Module:
        return bind(dspy.ReAct(sig, tools=[lookup], max_iters=2))

    requests = assert_same(build, run, Values(demos=None))
    outcomes.check()
    assert "lookup" in requests[0].messages[0][1]


def test_async_react_v2() -> None:
    """ReActV2's ``acall``, bound directly (its agent text kept)."""

    def run(program: dspy.Module, env: Env) -> None:
        async def main() -> None:
            try:
                await program.acall(question=question(0))
            except (AdapterParseError, ValueError):  # the simulation LM cannot call tools well
                pass

        asyncio.run(main())

    requests = assert_same(
        lambda sig, bind: bind(dspy.ReActV2(sig, tools=[lookup], max_iters=2)), run
    )
    assert any("You are an Agent" in content for r in requests for _, content in r.messages)


# ------------------------------------------------------------------------------------------
# 2. streaming


class Status(StatusMessageProvider):
    """Status messages that name what ran and with which inputs."""

    def module_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str:
        return f"start {type(instance).__name__} {sorted(inputs)}"

    def lm_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str:
        return f"lm {instance.model}"

    def module_end_status_message(self, outputs: Any) -> str:
        return f"end {sorted(outputs.keys()) if hasattr(outputs, 'keys') else outputs!r}"


def streamed(item: Any) -> Any:
    """A comparable form of one item a streamified program yields."""
    if isinstance(item, StreamResponse):
        return ("chunk", item.predict_name, item.signature_field_name, item.chunk)
    if isinstance(item, StatusMessage):
        return ("status", item.message)
    if isinstance(item, dspy.Prediction):
        return ("prediction", dict(item))
    return ("other", type(item).__name__)


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
@pytest.mark.parametrize("mode", ["async program", "sync program", "sync stream"])
def test_streamify_with_listeners_and_status_messages(mode: str, values: Values) -> None:
    """Stream listeners on a bound ChainOfThought's fields, and status messages: the same
    chunks, statuses and final prediction as plain DSPy (the third call, a repeat, is
    answered from DSPy's cache in both)."""
    outcomes = Outcomes()

    @outcomes.drive
    def run(program: dspy.Module, env: Env) -> None:
        listeners = [StreamListener("reasoning"), StreamListener("answer")]
        stream = dspy.streamify(
            program,
            status_message_provider=Status(),
            stream_listeners=listeners,
            is_async_program=mode == "async program",
            async_streaming=mode != "sync stream",
        )
        for i in (0, 1, 0):
            if mode == "sync stream":
                for item in stream(question=question(i)):
                    outcomes.record(streamed(item))
                continue

            async def main(i: int = i) -> None:
                async for item in stream(question=question(i)):
                    outcomes.record(streamed(item))

            asyncio.run(main())

    requests = assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), run, values)
    items = outcomes.check()
    assert len(requests) == 3
    fields = {item[2] for item in items if item[0] == "chunk"}
    assert fields == {"reasoning", "answer"}
    assert sum(item[0] == "status" for item in items) >= 4


@pytest.fixture(scope="module", name="store")
def store_address() -> Iterator[str]:
    """A real session store server on loopback (its own in-process engine)."""
    with served() as server:
        yield f"grpc://{server.address.removeprefix('grpc://')}"


def test_async_and_streaming_with_the_values_in_a_session_store(store: str) -> None:
    """Concurrent ``acall`` tasks and a streamed call, with the session in a store reached over
    gRPC: the same requests, results and stream items as plain DSPy."""
    outcomes = Outcomes()

    @outcomes.drive
    def run(program: dspy.Module, env: Env) -> None:
        async def main() -> None:
            calls = (program.acall(question=question(i)) for i in range(3))
            for prediction in await asyncio.gather(*calls):
                outcomes.record(dict(prediction))
            stream = dspy.streamify(program, stream_listeners=[StreamListener("answer")])
            async for item in stream(question=question(3)):
                outcomes.record(streamed(item))

        asyncio.run(main())

    build = lambda sig, bind: bind(dspy.ChainOfThought(sig))  # noqa: E731
    plain = run_plain(build, run, Values()).recorder.requests
    bound = run_bound(build, run, Values(), store=store).recorder.requests
    assert_requests_equal(plain, bound, ordered=False)
    items = outcomes.check()
    assert any(isinstance(item, tuple) and item[0] == "chunk" for item in items)


# ------------------------------------------------------------------------------------------
# 3. concurrent tasks in different sessions, and threads started inside a bound call

OTHER = Values(temperature=1.2, max_tokens=40, instructions="Think, then answer.", demos=[])


def test_concurrent_tasks_in_two_sessions() -> None:
    """One bound program, awaited concurrently by tasks in two sessions with different values,
    sends what two plain programs configured with those values send."""
    plain_env, bound_env = Env.fresh(), Env.fresh()
    dspy.configure(lm=plain_env.lm, callbacks=[plain_env.recorder])

    async def plain_task(values: Values, i: int) -> Any:
        program = dspy.ChainOfThought(dspy.Signature(SIGNATURE, values.instructions))
        program.predict.demos = list(values.demos or [])
        with dspy.context(lm=plain_env.lm.copy(**values.config())):
            return dict(await program.acall(question=question(i)))

    async def plain_main() -> list[Any]:
        tasks = [plain_task(v, i) for i in range(3) for v in (Values(), OTHER)]
        return await asyncio.gather(*tasks)

    plain_results = asyncio.run(plain_main())

    dspy.configure(lm=bound_env.lm, callbacks=[bound_env.recorder])
    hooks = {h: VARIABLES[h] for h in ("temperature", "max_tokens", "instructions", "demos")}
    program = dspex.bind(dspy.ChainOfThought(SIGNATURE), **hooks)

    async def bound_task(session: dspex.Session, i: int) -> Any:
        with session:
            await asyncio.sleep(0)  # let the other session's task run in between
            return dict(await program.acall(question=question(i)))

    with contextlib.ExitStack() as stack:  # both sessions open (the innermost is current)
        sessions = [stack.enter_context(dspex.Session()) for _ in range(2)]
        for session, values in zip(sessions, (Values(), OTHER), strict=True):
            with session:
                for variable in hooks.values():
                    variable.register()
                session.update({v.name: getattr(values, h) for h, v in hooks.items()})

        async def bound_main() -> list[Any]:
            return await asyncio.gather(*(bound_task(s, i) for i in range(3) for s in sessions))

        bound_results = asyncio.run(bound_main())
    assert plain_results == bound_results
    plain, bound = plain_env.recorder.requests, bound_env.recorder.requests
    assert_requests_equal(plain, bound, ordered=False)
    assert {kwargs_of(r)["temperature"] for r in plain} == {"0.33", "1.2"}


class Threaded(dspy.Module):
    """Runs its predictor in a ``concurrent.futures`` thread, optionally in a copied context."""

    def __init__(self, sig: Any, copy_context: bool) -> None:
        super().__init__()
        self.answer = dspy.Predict(sig)
        self.copy_context = copy_context

    def forward(self, question: str) -> Any:
        with ThreadPoolExecutor(1) as pool:
            if self.copy_context:
                context = contextvars.copy_context()
                return pool.submit(context.run, self.answer, question=question).result()
            return pool.submit(self.answer, question=question).result()


def test_a_thread_started_with_a_copied_context() -> None:
    """``contextvars.copy_context().run`` carries the bound values into a thread, as it
    carries a ``dspy.context`` there."""
    requests = assert_same(lambda sig, bind: bind(Threaded(sig, copy_context=True)), ask_two)
    assert {kwargs_of(r)["temperature"] for r in requests} == {"0.33"}


def test_a_thread_started_without_the_context_runs_without_the_bound_values() -> None:
    """Documented: a bare thread sees no ``dspy.context`` and no session, so the bound values
    do not reach it (the LM keywords of a ``dspy.context`` do not either); it runs with the
    predictor's own values, as the same program does in plain DSPy with no values set."""
    plain = run_plain(
        lambda sig, bind: Threaded(dspy.Signature(SIGNATURE), False),
        ask_two,
        Values(temperature=None, max_tokens=None, instructions=None, demos=None),
    )
    bound = run_bound(lambda sig, bind: bind(Threaded(sig, False)), ask_two, Values())
    assert_requests_equal(plain.recorder.requests, bound.recorder.requests)


def ask_two(program: dspy.Module, env: Env) -> None:
    for i in range(2):
        program(question=question(i))


def test_streamify_a_bound_react() -> None:
    """A streamified bound ReAct: listeners on its agent's and extractor's fields, and status
    messages, as in plain DSPy."""
    outcomes = Outcomes()

    @outcomes.drive
    def run(program: dspy.Module, env: Env) -> None:
        listeners = [StreamListener("next_thought"), StreamListener("answer")]
        stream = dspy.streamify(program, Status(), stream_listeners=listeners)

        async def main() -> None:
            async for item in stream(question=question(1)):
                outcomes.record(streamed(item))

        asyncio.run(main())

    build = lambda sig, bind: bind(dspy.ReAct(sig, tools=[lookup], max_iters=2))  # noqa: E731
    assert_same(build, run, Values(demos=None))
    items = outcomes.check()
    assert {item[2] for item in items if item[0] == "chunk"} == {"next_thought", "answer"}
    assert ("status", "start ReAct ['args', 'kwargs']") in items
