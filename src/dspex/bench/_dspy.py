"""Benchmark suite ``dspy``: the cost of binding variables to a DSPy predictor, beside plain DSPy.

Both predictors run the same signature, instructions and LM keywords against ``DummyLM`` (no
network, no cache); the bound one reads temperature, max_tokens and instructions from a local
session on every call and applies them through the hook adapter. Calls are interleaved one by
one (plain, bound, plain, ...) so both see the same machine load; p50 is over single calls,
which take hundreds of microseconds, far above timer resolution.

The remote figures (``remote_call_ms_p50``, ``remote_speedup_2w``) belong to ``dspex.Remote``
and are reported as null until it exists.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["TARGETS", "run"]

CALLS: Final = 2000
"""Timed calls per figure."""

WARMUP: Final = 200
"""Untimed calls per figure first (caches, lru caches, specialization)."""

INSTRUCTIONS: Final = "Answer in one word."
PLAIN_PATH: Final = (
    "dspy.Predict(sig, temperature=0.7, max_tokens=64)(question=...) with DummyLM, ChatAdapter"
)
BOUND_PATH: Final = (
    "dspex.bind(dspy.Predict(sig), temperature=, max_tokens=, instructions=) in a local "
    "session: 3 variables read per call, applied via the per-call hook adapter"
)

TARGETS: Final[dict[str, tuple[str, Callable[[dict[str, Any]], bool]]]] = {
    "bound_predict_us_p50": (
        "<= 1.10x dspy_predict_us_p50",
        lambda f: f["bound_predict_us_p50"] <= 1.10 * f["dspy_predict_us_p50"],
    ),
}
"""Figure -> (target text, check over all figures) from the DSPy integration issue."""


def _time_calls(calls: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    for call in calls.values():
        for _ in range(WARMUP):
            call()
    samples: dict[str, list[float]] = {key: [] for key in calls}
    clock = time.perf_counter_ns
    for _ in range(CALLS):
        for key, call in calls.items():
            start = clock()
            call()
            samples[key].append((clock() - start) / 1000)
    return samples


def run() -> dict[str, Any]:
    """Run the suite and return its figures (microseconds unless named otherwise)."""
    import dspy
    from dspy.utils import DummyLM

    from dspex.binding import bind
    from dspex.session import Session
    from dspex.variables import Variable

    signature = dspy.Signature("question -> answer", INSTRUCTIONS)
    plain = dspy.Predict(signature, temperature=0.7, max_tokens=64)
    lm = DummyLM({"": {"answer": "Paris"}})
    with Session(), dspy.context(lm=lm, disable_history=True):
        bound = bind(
            dspy.Predict("question -> answer"),
            temperature=Variable(float, 0.7, name="temperature", min=0.0, max=2.0),
            max_tokens=Variable(int, 64, name="max_tokens", min=1),
            instructions=Variable(str, INSTRUCTIONS, name="instructions"),
        )
        samples = _time_calls(
            {
                "plain": lambda: plain(question="Capital of France?"),
                "bound": lambda: bound(question="Capital of France?"),
            }
        )
    plain_p50 = statistics.median(samples["plain"])
    bound_p50 = statistics.median(samples["bound"])
    return {
        "dspy_predict_us_p50": round(plain_p50, 1),
        "bound_predict_us_p50": round(bound_p50, 1),
        "bound_to_plain_ratio": round(bound_p50 / plain_p50, 3),
        "dspy_predict_path": PLAIN_PATH,
        "bound_predict_path": BOUND_PATH,
        "dspy_calls": CALLS,
        "remote_call_ms_p50": None,
        "remote_speedup_2w": None,
        "remote_note": "measured by dspex.Remote, which is not built yet",
    }
