"""Differential cases over adapters and call styles."""

from __future__ import annotations

import asyncio
from typing import Any

import dspy
import pytest
from support.fidelity import Env, assert_same, question

pytestmark = pytest.mark.timeout(60)


def ask(program: dspy.Module, env: Env) -> None:
    for i in range(2):
        program(question=question(i))


@pytest.mark.parametrize("adapter", [dspy.ChatAdapter, dspy.JSONAdapter, dspy.XMLAdapter])
def test_configured_adapter(adapter: type) -> None:
    def run(program: dspy.Module, env: Env) -> None:
        with dspy.context(adapter=adapter()):
            ask(program, env)

    assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), run)


class Switching(dspy.Module):
    """Defect 2: a module that switches the adapter inside its own forward."""

    def __init__(self, sig: Any) -> None:
        super().__init__()
        self.first = dspy.Predict(sig)
        self.second = dspy.Predict(sig)

    def forward(self, question: str) -> Any:
        self.first(question=question)
        with dspy.context(adapter=dspy.JSONAdapter()):
            return self.second(question=question)


def test_adapter_switched_inside_forward() -> None:
    requests = assert_same(lambda sig, bind: bind(Switching(sig)), ask)
    assert all(dict(r.kwargs).get("temperature") == "0.33" for r in requests)


def test_acall() -> None:
    def run(program: dspy.Module, env: Env) -> None:
        async def main() -> None:
            for i in range(2):
                await program.acall(question=question(i))

        asyncio.run(main())

    assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), run)


def test_asyncify() -> None:
    def run(program: dspy.Module, env: Env) -> None:
        call = dspy.asyncify(program)

        async def main() -> None:
            for i in range(2):
                await call(question=question(i))

        asyncio.run(main())

    assert_same(lambda sig, bind: bind(dspy.Predict(sig)), run)


def test_streamify() -> None:
    def run(program: dspy.Module, env: Env) -> None:
        stream = dspy.streamify(program)

        async def main() -> None:
            async for _ in stream(question=question(0)):
                pass

        asyncio.run(main())

    assert_same(lambda sig, bind: bind(dspy.Predict(sig)), run)


def test_evaluate_with_eight_threads() -> None:
    devset = [
        dspy.Example(question=question(i), answer="x").with_inputs("question") for i in range(8)
    ]

    def run(program: dspy.Module, env: Env) -> None:
        dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: 0.0, num_threads=8)(program)

    assert_same(lambda sig, bind: bind(dspy.ChainOfThought(sig)), run, ordered=False)
