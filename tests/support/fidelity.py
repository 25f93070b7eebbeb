"""The differential harness: run a case in plain DSPy and bound in a session, compare LM requests.

Each run gets fresh LMs (the offline simulation LM with DSPy's cache on) whose ``user`` keyword is
a per-run nonce: it is part of every request, so a response cached by one run can never answer
the other, and it is removed before comparing. A DSPy callback records every LM call as DSPy
hands it to the LM (cache hits included): the model, the LM's kwargs merged with the call's
(rollout ids included) and the messages.

The values V are configured the natural DSPy way in the plain run: LM keywords as
``dspy.context(lm=lm.copy(**kwargs))`` around the whole run, the chosen LM as the context LM, the
instructions on the task signature the modules are built from, and the demos on every predictor
of the module that the bound run binds. The bound run builds the same modules from the default
signature, binds V's variables where the case says, and sets V in a session.

The plain context wraps the whole run, the bound values wrap each bound call: the two agree as
long as no code inside swaps in an LM that is not a rollout copy (an optimizer's own
``task_model``, for instance, would get the bound keywords too, as predictor ``config`` gives
them in DSPy; the cases pass such LMs explicitly only where DSPy keeps them outside the bound
module, and ``test_fidelity_more`` compares those LM switches against keywords set as config).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

import dspex
from dspex.sim import SimLM

SIGNATURE = "question -> answer"
INSTRUCTIONS = "Answer with one short phrase, no explanation."
DEMOS = [
    {"question": "What is 2 + 2?", "answer": "4"},
    {"question": "What is the capital of Italy?", "answer": "Rome"},
]


@dataclass(frozen=True)
class Request:
    """One LM call as the LM received it (the nonce removed)."""

    model: str
    kwargs: tuple[tuple[str, str], ...]
    messages: tuple[tuple[str, str], ...]


class Recorder(BaseCallback):
    """A DSPy callback recording every LM call of one run."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        kwargs = {**(getattr(instance, "kwargs", None) or {}), **(inputs.get("kwargs") or {})}
        kwargs.pop("user", None)  # the nonce (absent on LMs a case scripts itself)
        messages = inputs.get("messages") or [{"role": "user", "content": inputs.get("prompt")}]
        request = Request(
            instance.model,
            tuple(sorted((k, repr(v)) for k, v in kwargs.items())),
            tuple((str(m.get("role")), str(m.get("content"))) for m in messages),
        )
        with self._lock:
            self.requests.append(request)


@dataclass
class Env:
    """The LMs of one run (all with the run's nonce) and the recorder."""

    recorder: Recorder
    lm: Any
    large: Any
    prompt: Any

    @classmethod
    def fresh(cls, lm_class: type[SimLM] = SimLM) -> Env:
        """New LMs (of ``lm_class``, a SimLM subclass) with a new nonce, and a new recorder."""
        nonce = uuid.uuid4().hex
        return cls(
            Recorder(),
            lm_class("dspex/sim", cache=True, user=nonce),
            lm_class("dspex/sim-large", cache=True, user=nonce),
            lm_class("dspex/sim-small", cache=True, user=nonce),
        )


@dataclass(frozen=True)
class Values:
    """The variable values V of a case: which hooks are bound, and to what."""

    temperature: float | None = 0.33
    max_tokens: int | None = 77
    instructions: str | None = INSTRUCTIONS
    demos: list[dict[str, Any]] | None = field(default_factory=lambda: list(DEMOS))
    lm: str | None = None  # "large": choose the env's large LM

    def config(self) -> dict[str, Any]:
        found = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        return {k: v for k, v in found.items() if v is not None}


VARIABLES = {
    "temperature": dspex.Variable(float, 0.9, name="f_temperature", min=0.0, max=2.0),
    "max_tokens": dspex.Variable(int, 10, name="f_max_tokens", min=1),
    "instructions": dspex.Variable(str, "Default instructions.", name="f_instructions"),
    "demos": dspex.Variable(list, [], name="f_demos"),
}


def lm_variable(env: Env) -> dspex.Variable:
    """The model choice of one run: keys mapped to that run's configured LM objects."""
    return dspex.Variable(dspex.Choice(base=env.lm, large=env.large), "base", name="f_lm")


Bind = Callable[[dspy.Module], dspy.Module]
Build = Callable[[type[dspy.Signature], Bind], dspy.Module]
Drive = Callable[[dspy.Module, Env], Any]
MakeEnv = Callable[[], Env]


def run_plain(
    build: Build,
    drive: Drive,
    values: Values,
    *,
    configure_lm: bool = True,
    make_env: MakeEnv = Env.fresh,
) -> Env:
    """Run the case in plain DSPy with ``values`` configured the natural DSPy way."""
    env = make_env()
    dspy.configure(lm=env.lm if configure_lm else None, callbacks=[env.recorder])
    signature = _signature(values)

    def configure(module: dspy.Module) -> dspy.Module:
        if values.demos is not None:
            for predictor in module.predictors():
                predictor.demos = list(values.demos)
        return module

    program = build(signature, configure)
    base = env.large if values.lm == "large" else env.lm
    with dspy.context(lm=base.copy(**values.config()) if values.config() else base):
        drive(program, env)
    return env


def run_plain_owned(
    build: Build, drive: Drive, values: Values, *, make_env: MakeEnv = Env.fresh
) -> Env:
    """Run the case in plain DSPy with ``values`` set on the predictors themselves.

    The other DSPy form of the values: LM keywords as each predictor's ``config`` (they reach
    whichever LM the predictor runs with) and the chosen LM as each predictor's own ``lm``;
    instructions and demos as in :func:`run_plain`.
    """
    env = make_env()
    dspy.configure(lm=env.lm, callbacks=[env.recorder])

    def configure(module: dspy.Module) -> dspy.Module:
        for predictor in module.predictors():
            if values.demos is not None:
                predictor.demos = list(values.demos)
            predictor.config.update(values.config())
            if values.lm is not None:
                predictor.lm = env.large if values.lm == "large" else env.lm
        return module

    drive(build(_signature(values), configure), env)
    return env


def _signature(values: Values) -> type[dspy.Signature]:
    signature = dspy.Signature(SIGNATURE)
    if values.instructions is not None:
        signature = signature.with_instructions(values.instructions)
    return signature


def run_bound(
    build: Build,
    drive: Drive,
    values: Values,
    *,
    configure_lm: bool = True,
    make_env: MakeEnv = Env.fresh,
    store: str | None = None,
) -> Env:
    """Run the case bound, with ``values`` set in a session (in-process, or in ``store``)."""
    env = make_env()
    dspy.configure(lm=env.lm if configure_lm else None, callbacks=[env.recorder])
    hooks = {
        hook: VARIABLES[hook]
        for hook in ("temperature", "max_tokens", "instructions", "demos")
        if getattr(values, hook) is not None
    }
    if values.lm is not None:
        hooks["lm"] = lm_variable(env)
    with dspex.Session(store) as session:
        program = build(dspy.Signature(SIGNATURE), lambda module: dspex.bind(module, **hooks))
        session.update({hooks[h].name: _value(values, h) for h in hooks}, atomic=True)
        drive(program, env)
    return env


def _value(values: Values, hook: str) -> Any:
    return getattr(values, hook)


def assert_same(
    build: Build,
    drive: Drive,
    values: Values | None = None,
    *,
    ordered: bool = True,
    configure_lm: bool = True,
    make_env: MakeEnv = Env.fresh,
) -> list[Request]:
    """Run both ways and assert identical LM request sequences; returns the requests.

    ``make_env`` gives each run its LMs (``Env.fresh``: new LMs, a new nonce).
    """
    values = values or Values()
    options: dict[str, Any] = {"configure_lm": configure_lm, "make_env": make_env}
    plain = run_plain(build, drive, values, **options).recorder.requests
    bound = run_bound(build, drive, values, **options).recorder.requests
    assert_requests_equal(plain, bound, ordered=ordered)
    return plain


def assert_requests_equal(
    plain: list[Request], bound: list[Request], *, ordered: bool = True
) -> None:
    """Assert two recorded runs sent the same LM requests (in order, unless ``ordered=False``)."""
    assert plain, "the case made no LM call"
    if not ordered:
        plain, bound = sorted(plain, key=repr), sorted(bound, key=repr)
    for index, (p, b) in enumerate(zip(plain, bound, strict=False)):
        assert p == b, f"request {index} differs:\nplain: {p}\nbound: {b}"
    assert len(plain) == len(bound), f"plain made {len(plain)} LM calls, bound {len(bound)}"


def lookup(query: str) -> str:
    """Look a fact up (a tool for ReAct cases)."""
    return f"fact about {query}"


def question(i: int = 0) -> str:
    """A question the simulation LM knows."""
    return [
        "What is 12 * 7?",
        "What is the capital of France?",
        "What is 9 + 10?",
        "What is the capital of Japan?",
    ][i % 4]


def kwargs_of(request: Request) -> dict[str, str]:
    """A request's kwargs as a dict (values as repr strings)."""
    return dict(request.kwargs)
