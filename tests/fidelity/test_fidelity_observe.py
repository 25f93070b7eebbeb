"""Differential cases, round 3: more adapters and native tool calls, and what DSPy lets a user
observe of a run: callbacks, usage tracking, LM and module history, and the response cache.

Plain DSPy is the oracle (see :mod:`support.fidelity`).
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from typing import Any

import dspy
import pytest
from dspy.adapters.baml_adapter import BAMLAdapter
from dspy.clients.base_lm import GLOBAL_HISTORY
from dspy.utils.callback import BaseCallback
from support.fidelity import (
    Env,
    Values,
    assert_requests_equal,
    assert_same,
    lookup,
    question,
    run_bound,
    run_plain,
    run_plain_owned,
)

import dspex
from dspex.sim import SimLM

pytestmark = pytest.mark.timeout(60)


def ask(program: dspy.Module, env: Env) -> None:
    for i in range(2):
        program(question=question(i))


# ------------------------------------------------------------------------------------------
# 1. TwoStepAdapter, BAMLAdapter, native function calling


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
def test_two_step_adapter(values: Values) -> None:
    """The main LM gets the bound values; the extraction model is called as it is, in both."""

    def run(program: dspy.Module, env: Env) -> None:
        with dspy.context(adapter=dspy.TwoStepAdapter(extraction_model=env.prompt)):
            ask(program, env)

    requests = assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), run, values)
    assert "dspex/sim-small" in {r.model for r in requests}
    assert len({r.model for r in requests}) == 2


def test_baml_adapter() -> None:
    def run(program: dspy.Module, env: Env) -> None:
        with dspy.context(adapter=BAMLAdapter()):
            ask(program, env)

    assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), run)


class ToolSimLM(SimLM):
    """The simulation LM, declared able to take native tool definitions (``tools=``)."""

    @property
    def supports_function_calling(self) -> bool:
        return True


def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize(
    "adapter",
    [lambda: dspy.ChatAdapter(use_native_function_calling=True), dspy.JSONAdapter],
    ids=["chat", "json"],
)
def test_native_function_calling(adapter: Callable[[], Any]) -> None:
    """Tools sent as native tool definitions (``tools=``) from a bound Predict."""
    tools = [dspy.Tool(forecast)]

    def build(sig: Any, bind: Any) -> dspy.Module:
        extended = sig.append("tools", dspy.InputField(), type_=list[dspy.Tool]).append(
            "calls", dspy.OutputField(), type_=dspy.ToolCalls
        )
        return bind(dspy.Predict(extended))

    def run(program: dspy.Module, env: Env) -> None:
        with dspy.context(adapter=adapter()):
            for i in range(2):
                program(question=question(i), tools=tools)

    requests = assert_same(build, run, make_env=lambda: Env.fresh(ToolSimLM))
    assert all("forecast" in dict(r.kwargs).get("tools", "") for r in requests)


# ------------------------------------------------------------------------------------------
# 2. callbacks, usage, history


class Events(BaseCallback):
    """Every module, adapter and LM callback of a run, with what it was given."""

    def __init__(self, program: Any) -> None:
        self.program = program
        self.events: list[tuple[Any, ...]] = []

    def _start(self, kind: str, instance: Any, inputs: dict[str, Any]) -> None:
        shown = {k: repr(v) for k, v in inputs.items()}
        same = instance is self.program
        self.events.append((kind, type(instance).__name__, same, sorted(shown.items())))

    def _end(self, kind: str, outputs: Any, exception: Exception | None) -> None:
        self.events.append((kind, repr(outputs), repr(exception)))

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("module", instance, inputs)

    def on_module_end(
        self, call_id: str, outputs: Any, exception: Exception | None = None
    ) -> None:
        self._end("module end", outputs, exception)

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("format", instance, inputs)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("parse", instance, inputs)

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any, exception: Exception | None = None
    ) -> None:
        self._end("parse end", outputs, exception)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("lm", instance.model, repr(inputs.get("messages"))))

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        self._end("lm end", outputs, exception)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("tool", instance, inputs)

    def on_tool_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        self._end("tool end", outputs, exception)


CALLBACK_MODULES: dict[str, Callable[[Any], dspy.Module]] = {
    "ChainOfThought": dspy.ChainOfThought,
    "ReAct": lambda sig: dspy.ReAct(sig, tools=[lookup], max_iters=2),
}


@pytest.mark.parametrize("style", ["call", "acall"])
@pytest.mark.parametrize("where", ["settings", "instance"])
@pytest.mark.parametrize("module", list(CALLBACK_MODULES))
def test_callbacks_see_the_same_calls_and_inputs(module: str, where: str, style: str) -> None:
    """A callback (configured, or on the module instance) sees the same module, adapter, tool
    and LM events, with the same inputs and outputs, and the bound program itself as the
    module instance, on sync and async calls."""
    runs: list[list[tuple[Any, ...]]] = []

    def calls(program: dspy.Module, env: Env) -> None:
        if style == "call":
            ask(program, env)
            return

        async def main() -> None:
            for i in range(2):
                await program.acall(question=question(i))

        asyncio.run(main())

    def run(program: dspy.Module, env: Env) -> None:
        events = Events(program)
        if where == "instance":
            program.callbacks = [events]
            calls(program, env)
        else:
            with dspy.context(callbacks=[env.recorder, events]):
                calls(program, env)
        runs.append(events.events)

    make = CALLBACK_MODULES[module]
    assert_same(lambda sig, bind: bind(make(sig)), run, Values(demos=None))
    plain, bound = runs
    assert plain == bound
    assert ("module", module, True) in {e[:3] for e in plain}
    if where == "settings":
        assert {e[0] for e in plain} >= {"module", "format", "parse", "lm", "lm end"}


@pytest.mark.parametrize("change", ["append", "assign"])
def test_callbacks_on_the_configured_lm(change: str) -> None:
    """Callbacks on the configured LM object (``lm.callbacks``, added or replaced after the
    first call) see the bound calls, as with the keywords in a predictor's ``config``."""
    runs: list[list[tuple[Any, ...]]] = []

    def run(program: dspy.Module, env: Env) -> None:
        program(question=question(0))
        events = Events(program)
        if change == "append":
            env.lm.callbacks.append(events)
        else:
            env.lm.callbacks = [events]
        ask(program, env)
        runs.append(events.events)

    build = lambda sig, bind: bind(dspy.ChainOfThought(sig))  # noqa: E731
    values = Values(instructions=None, demos=None)
    plain = run_plain_owned(build, run, values).recorder.requests
    bound = run_bound(build, run, values).recorder.requests
    assert_requests_equal(plain, bound)
    assert runs[0] == runs[1]
    assert [e[0] for e in runs[0]] == ["lm", "lm end"] * 2


@pytest.mark.parametrize(
    "values",
    [Values(instructions=None, demos=None), Values(lm="large")],
    ids=["keywords", "keywords and lm choice"],
)
def test_keywords_changed_on_the_lm_after_the_first_call(values: Values) -> None:
    """``lm.kwargs`` edited after the first bound call (a new default keyword, a bound one
    changed) reach the later calls, as with the keywords in a predictor's ``config``."""

    def run(program: dspy.Module, env: Env) -> None:
        program(question=question(0))
        for lm in (env.lm, env.large):
            lm.kwargs["top_p"] = 0.5
            lm.kwargs["temperature"] = 1.5  # a bound keyword: the bound value still wins
        ask(program, env)

    build = lambda sig, bind: bind(dspy.ChainOfThought(sig))  # noqa: E731
    plain = run_plain_owned(build, run, values).recorder.requests
    bound = run_bound(build, run, values).recorder.requests
    assert_requests_equal(plain, bound)
    assert [(dict(r.kwargs).get("top_p"), dict(r.kwargs)["temperature"]) for r in plain] == [
        (None, "0.33"),
        ("0.5", "0.33"),
        ("0.5", "0.33"),
    ]


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
def test_track_usage(values: Values) -> None:
    """``dspy.settings.track_usage``: each prediction reports the same usage per model."""
    usages: list[list[Any]] = []

    def run(program: dspy.Module, env: Env) -> None:
        usages.append([])
        with dspy.context(track_usage=True):
            for i in range(2):
                usages[-1].append(program(question=question(i)).get_lm_usage())

    assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), run, values)
    plain, bound = usages
    assert plain == bound
    assert set(plain[0]) == {f"dspex/sim{'-large' if values.lm else ''}"}


def test_trace() -> None:
    """``dspy.settings.trace`` (what bootstrapping optimizers read) gets the same entries: the
    program's own predictor objects, their inputs and predictions."""
    traces: list[list[Any]] = []

    def run(program: dspy.Module, env: Env) -> None:
        with dspy.context(trace=[]):
            ask(program, env)
            predictors = {id(p): name for name, p in program.named_predictors()}
            traces.append(
                [
                    (predictors[id(p)], inputs, dict(pred))
                    for p, inputs, pred in dspy.settings.trace
                ]
            )

    assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), run)
    assert traces[0] == traces[1]
    assert [name for name, _, _ in traces[0]] == ["predict", "predict"]


def _history_view(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (e["model"], repr(e["messages"]), repr(e["outputs"]), repr(e["usage"]), repr(e["kwargs"]))
        for e in entries
    ]


def _printed(show: Callable[..., None], n: int) -> str:
    """What an ``inspect_history`` function prints, without the timestamps."""
    out = io.StringIO()
    show(n, file=out)
    return re.sub(r"\[\d{4}-\d\d-\d\dT[\d:.]+\]", "[time]", out.getvalue())


def test_global_and_module_history() -> None:
    """``dspy.inspect_history`` and a module's own ``history`` hold the same entries."""
    seen: list[tuple[Any, ...]] = []

    def run(program: dspy.Module, env: Env) -> None:
        start = len(GLOBAL_HISTORY)
        ask(program, env)
        entries = GLOBAL_HISTORY[start:]
        seen.append(
            (
                _history_view(entries),
                _history_view(program.history),
                _printed(dspy.inspect_history, len(entries)),
            )
        )

    assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), run)
    plain, bound = seen
    assert plain[0] == bound[0]
    assert plain[1] == bound[1]
    assert plain[2] == bound[2]
    assert len(plain[1]) == 2
    assert "What is 12 * 7?" in plain[2]


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
def test_lm_history_of_the_lm_used(values: Values) -> None:
    """``lm.history``/``lm.inspect_history()`` of the LM a call ran on (the configured one, or
    the chosen one) show the bound calls, as with the keywords in a predictor's ``config`` in
    DSPy (the entries' own ``kwargs`` differ: there the keywords are call keywords, bound they
    are the LM copy's keywords), also after the user replaced ``lm.history``."""
    views = []

    def drive(program: dspy.Module, env: Env) -> None:
        lm = env.large if values.lm else env.lm
        ask(program, env)
        views.append(
            ([view[:4] for view in _history_view(lm.history)], _printed(lm.inspect_history, 2))
        )
        lm.history = []
        program(question=question(3))
        views.append(([view[:4] for view in _history_view(lm.history)], ""))

    build = lambda sig, bind: bind(dspy.ChainOfThought(sig))  # noqa: E731
    plain = run_plain_owned(build, drive, values).recorder.requests
    bound = run_bound(build, drive, values).recorder.requests
    assert_requests_equal(plain, bound)
    assert views[:2] == views[2:]
    assert [len(view[0]) for view in views[:2]] == [2, 1]


@pytest.mark.parametrize("values", [Values(), Values(lm="large")], ids=["keywords", "lm choice"])
def test_per_call_config_wins_over_bound_keywords(values: Values) -> None:
    """``program(..., config={...})`` keywords win over bound ones, as over a context LM's."""

    def run(program: dspy.Module, env: Env) -> None:
        program(question=question(0), config={"temperature": 0.9, "top_p": 0.5})
        program(question=question(1))

    requests = assert_same(lambda sig, bind: bind(dspy.Predict(sig)), run, values)
    assert [dict(r.kwargs)["temperature"] for r in requests] == ["0.9", "0.33"]


class PerCallLM(dspy.Module):
    """Calls its predictor with a per-call ``lm=`` (one of Predict's privileged keywords)."""

    def __init__(self, sig: Any, lm: Any) -> None:
        super().__init__()
        self.answer = dspy.Predict(sig)
        self.other = lm

    def forward(self, question: str) -> Any:
        self.answer(question=question)
        return self.answer(question=question, lm=self.other)


@pytest.mark.parametrize(
    "values",
    [Values(instructions=None, demos=None), Values(lm="large")],
    ids=["keywords", "keywords and lm choice"],
)
def test_a_per_call_lm_gets_the_bound_keywords(values: Values) -> None:
    """``predictor(..., lm=X)`` runs X with the bound LM keywords, as with the keywords in
    the predictor's ``config`` in DSPy (and as its own ``lm`` does); X itself wins over a
    bound ``lm`` choice, as a per-call choice does."""
    small: list[Any] = []

    def build(sig: Any, bind: Any) -> dspy.Module:
        return bind(PerCallLM(sig, small[-1]))

    def make_env() -> Env:
        env = Env.fresh()
        small.append(env.prompt)
        return env

    plain = run_plain_owned(build, ask, values, make_env=make_env).recorder.requests
    bound = run_bound(build, ask, values, make_env=make_env).recorder.requests
    assert_requests_equal(plain, bound)
    assert {(r.model, dict(r.kwargs)["temperature"]) for r in plain[1::2]} == {
        ("dspex/sim-small", "0.33")
    }


# ------------------------------------------------------------------------------------------
# 3. DSPy's response cache


def misses(runs: list[int]) -> Callable[[dspy.Module, Env], None]:
    """A drive that records how many LM calls missed the cache (calls that were billed)."""

    def run(program: dspy.Module, env: Env) -> None:
        with dspy.track_usage() as tracker:
            ask(program, env)
        runs.append(sum(len(entries) for entries in tracker.usage_data.values()))

    return run


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (Values(), 0),
        (Values(temperature=0.5), 2),
        (Values(max_tokens=12), 2),
        (Values(instructions="Be brief."), 2),
        (Values(lm="large"), 2),
    ],
    ids=["same values", "temperature", "max_tokens", "instructions", "lm choice"],
)
def test_cache_hits_and_misses(second: Values, expected: int) -> None:
    """A run after a plain run with values V hits DSPy's cache exactly where plain DSPy does:
    the bound keywords are part of the cache key as configured ones are. The second run is
    plain in one case, bound in the other, each after its own plain warm-up on shared LMs."""
    first = Values()
    counts: dict[str, list[int]] = {}
    for way, second_run in (("plain", run_plain), ("bound", run_bound)):
        env = Env.fresh()
        counts[way] = []
        build = lambda sig, bind: bind(dspy.ChainOfThought(sig))  # noqa: E731
        run_plain(build, misses(counts[way]), first, make_env=lambda env=env: env)
        second_run(build, misses(counts[way]), second, make_env=lambda env=env: env)
    assert counts["plain"] == counts["bound"]
    assert counts["plain"] == [2, expected]


@pytest.mark.parametrize("adapter_setting", [None, True])
def test_a_bound_parallel_tool_calls_acts_as_an_lm_keyword(adapter_setting: Any) -> None:
    """Documented: bound keywords are the LM copy's keywords, as with
    ``dspy.context(lm=lm.copy(**kwargs))``. Where DSPy's adapters treat call keywords
    (a predictor's ``config``) differently, a bound keyword acts as an LM keyword: no
    ``tool_choice="auto"`` is added for it (the adapter adds one for its own setting), and an
    adapter's own ``parallel_tool_calls`` wins over it."""
    parallel = dspex.Variable(bool, False, name="o_parallel")
    tools = [dspy.Tool(forecast)]
    signature = (
        dspy.Signature("question -> answer")
        .append("tools", dspy.InputField(), type_=list[dspy.Tool])
        .append("calls", dspy.OutputField(), type_=dspy.ToolCalls)
    )
    runs = []
    for bound in (False, True):
        env = Env.fresh(ToolSimLM)
        adapter = dspy.ChatAdapter(
            use_native_function_calling=True, parallel_tool_calls=adapter_setting
        )
        dspy.configure(lm=env.lm, callbacks=[env.recorder], adapter=adapter)
        if bound:
            with dspex.Session():
                program = dspex.bind(
                    dspy.Predict(signature), config={"parallel_tool_calls": parallel}
                )
                program(question=question(0), tools=tools)
        else:
            with dspy.context(lm=env.lm.copy(parallel_tool_calls=False)):
                dspy.Predict(signature)(question=question(0), tools=tools)
        runs.append(env.recorder.requests)
    assert_requests_equal(*runs)
    sent = dict(runs[0][0].kwargs)
    assert ("tool_choice" in sent) == (adapter_setting is True)  # only for a call keyword
    assert sent["parallel_tool_calls"] == repr(adapter_setting is True)


def _error_of(run: Callable[[], Any]) -> tuple[type[BaseException], str]:
    try:
        run()
    except Exception as exc:  # the error itself is what the case compares
        return type(exc), str(exc)
    raise AssertionError("the call did not raise")


NOT_LMS = {"a model name string": "openai/gpt-4o-mini", "an object": object()}


@pytest.mark.parametrize("not_lm", list(NOT_LMS.values()), ids=list(NOT_LMS))
@pytest.mark.parametrize("where", ["per call", "configured", "set_lm"])
def test_something_that_is_not_an_lm_gets_dspys_own_error(where: str, not_lm: Any) -> None:
    """A string or other non-LM where DSPy expects an LM raises DSPy's own ValueError ("LM must
    be an instance of `dspy.BaseLM`, not a string ...") in a bound call with bound LM keywords,
    as with the keywords as predictor ``config`` in plain DSPy (the bound call raised
    AttributeError: 'str' object has no attribute 'kwargs')."""
    temperature = dspex.Variable(float, 0.33, name="x_temperature", min=0.0, max=2.0)
    errors = []
    for bound in (False, True):
        dspy.configure(lm=not_lm if where == "configured" else SimLM("dspex/sim"))
        predictor = dspy.Predict("question -> answer")
        if where == "set_lm":
            predictor.set_lm(not_lm)
        if bound:
            dspex.bind(predictor, temperature=temperature)
        else:
            predictor.config["temperature"] = 0.33
        extra = {"lm": not_lm} if where == "per call" else {}
        with dspex.Session():
            errors.append(_error_of(lambda p=predictor, e=extra: p(question=question(0), **e)))
    assert errors[0][0] is ValueError
    assert errors[1] == errors[0]
