"""Benchmark suite ``dspy``: the cost of binding variables to a DSPy predictor, beside plain DSPy.

Both predictors run the same signature, instructions and LM keywords against ``DummyLM`` (no
network, no cache); the bound one reads temperature, max_tokens and instructions from a local
session on every call (the LM keywords reach the LM as a cached LM copy at the bind boundary,
the instructions through the predictor's hooks). Calls are interleaved one by one (plain,
bound, plain, ...) so both see the same machine load; p50 is over single calls, which take
hundreds of microseconds, far above timer resolution.

Two more pairs, each beside its plain-DSPy baseline in the same run:

* ``bound_best_of_n_us_p50``: ``bind(dspy.BestOfN(Predict, N=3), temperature=, max_tokens=,
  instructions=)`` (a reward that never passes, so every call makes 3 rollouts), beside
  ``dspy_best_of_n_us_p50``, the same BestOfN over a configured predictor;
* ``bound_program3_us_p50``: a 3-predictor program (three chained ``Predict``) whose predictors
  each bind their own instructions and whose whole program binds temperature and max_tokens
  (4 bind boundaries per call), beside ``dspy_program3_us_p50``, the same program configured.

The remote figures measure ``dspex.Remote`` on the same kind of bound predictor (a bound
temperature, the simulation LM shipped from this process's ``dspy.settings``), in a local session
that the first Remote promotes to its embedded store:

* ``remote_call_ms_p50``: one call through a 1-worker Remote (pickle, pipe, the worker's snapshot
  read from the store, the predictor, the reply), beside ``remote_local_call_ms_p50``, the same
  module called in this process;
* ``remote_speedup_2w``: throughput of a 2-worker Remote divided by a 1-worker one on a CPU-bound
  module (the simulation LM burns ``REMOTE_CPU_WORK`` SHA-256 rounds per call, tens of
  milliseconds), in interleaved rounds so both see the same machine load. Its baseline,
  ``pool_speedup_2w``, is the same ratio for bare ``dspex.runtime`` worker processes burning the
  same rounds (no session, no DSPy): what the machine offers right now. Fewer than 2 free CPUs
  caps both.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["TARGETS", "run"]

CALLS: Final = 2000
"""Timed calls per figure."""

COMPOSITE_CALLS: Final = 300
"""Timed calls per figure for BestOfN and the 3-predictor program (several LM calls each)."""

WARMUP: Final = 200
"""Untimed calls per figure first (caches, lru caches, specialization)."""

INSTRUCTIONS: Final = "Answer in one word."
PLAIN_PATH: Final = (
    "dspy.Predict(sig, temperature=0.7, max_tokens=64)(question=...) with DummyLM, ChatAdapter"
)
BOUND_PATH: Final = (
    "dspex.bind(dspy.Predict(sig), temperature=, max_tokens=, instructions=) in a local "
    "session: 3 variables read per call, LM keywords as a cached LM copy in DSPy's context "
    "overlay, instructions through the predictor's signature hook"
)

REMOTE_CALLS: Final = 200
"""Timed single calls through the 1-worker Remote (after ``REMOTE_WARMUP``)."""

REMOTE_WARMUP: Final = 20
REMOTE_CPU_WORK: Final = 100_000
"""SHA-256 rounds the simulation LM burns per call in the speed-up figure (about 40 ms)."""

SPEEDUP_CALLS: Final = 12
"""Calls mapped per pool and round in the speed-up figures."""

SPEEDUP_ROUNDS: Final = 5
"""Interleaved rounds (1 worker, then 2) in the speed-up figures; the median ratio is kept."""

TARGETS: Final[dict[str, tuple[str, Callable[[dict[str, Any]], bool]]]] = {
    "bound_predict_us_p50": (
        "<= 1.10x dspy_predict_us_p50",
        lambda f: f["bound_predict_us_p50"] <= 1.10 * f["dspy_predict_us_p50"],
    ),
    "remote_speedup_2w": (">= 1.6", lambda f: f["remote_speedup_2w"] >= 1.6),
}
"""Figure -> (target text, check over all figures) from the DSPy integration issue."""


def _time_calls(
    calls: dict[str, Callable[[], Any]], count: int = CALLS, warmup: int = WARMUP
) -> dict[str, list[float]]:
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {key: [] for key in calls}
    clock = time.perf_counter_ns
    for _ in range(count):
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
        composite = _composite_figures(lm)
    plain_p50 = statistics.median(samples["plain"])
    bound_p50 = statistics.median(samples["bound"])
    return {
        **_bound_figures(plain_p50, bound_p50),
        **composite,
        **_remote_figures(),
    }


def _reject(args: Any, prediction: Any) -> float:
    return 0.0  # never passes: every BestOfN call makes all N rollouts


class _Variables:
    """The variables the composite figures bind (declared once per run)."""

    def __init__(self) -> None:
        from dspex.variables import Variable

        self.temperature = Variable(float, 0.7, name="c_temperature", min=0.0, max=2.0)
        self.max_tokens = Variable(int, 64, name="c_max_tokens", min=1)
        self.instructions = [
            Variable(str, INSTRUCTIONS, name=f"c_instructions_{i}") for i in range(3)
        ]


def _chain(make: Callable[[int], Any]) -> Any:
    """A 3-predictor program: three chained predictors built by ``make(i)``."""
    import dspy

    class Chain(dspy.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.steps = [make(i) for i in range(3)]

        def forward(self, question: str) -> Any:
            for step in self.steps:
                question = step(question=question).answer
            return question

    return Chain()


def _composite_figures(lm: Any) -> dict[str, Any]:
    """Bound BestOfN and a bound 3-predictor program, each beside plain DSPy (same run)."""
    import dspy

    from dspex.binding import bind

    v = _Variables()
    signature = dspy.Signature("question -> answer", INSTRUCTIONS)

    def configured() -> Any:  # plain: the values set on the predictor, no per-call cost
        return dspy.Predict(signature, temperature=0.7, max_tokens=64)

    plain_best = dspy.BestOfN(configured(), N=3, reward_fn=_reject, threshold=1.0)
    bound_best = bind(
        dspy.BestOfN(dspy.Predict("question -> answer"), N=3, reward_fn=_reject, threshold=1.0),
        temperature=v.temperature,
        max_tokens=v.max_tokens,
        instructions=v.instructions[0],
    )
    plain_chain = _chain(lambda i: configured())
    bound_chain = bind(
        _chain(lambda i: bind(dspy.Predict("question -> answer"), instructions=v.instructions[i])),
        temperature=v.temperature,
        max_tokens=v.max_tokens,
    )

    samples = _time_calls(
        {
            "plain_best": lambda: plain_best(question="Capital of France?"),
            "bound_best": lambda: bound_best(question="Capital of France?"),
            "plain_chain": lambda: plain_chain(question="Capital of France?"),
            "bound_chain": lambda: bound_chain(question="Capital of France?"),
        },
        count=COMPOSITE_CALLS,
        warmup=COMPOSITE_CALLS // 10,
    )
    p50 = {key: statistics.median(values) for key, values in samples.items()}
    return {
        "dspy_best_of_n_us_p50": round(p50["plain_best"], 1),
        "bound_best_of_n_us_p50": round(p50["bound_best"], 1),
        "bound_best_of_n_ratio": round(p50["bound_best"] / p50["plain_best"], 3),
        "dspy_program3_us_p50": round(p50["plain_chain"], 1),
        "bound_program3_us_p50": round(p50["bound_chain"], 1),
        "bound_program3_ratio": round(p50["bound_chain"] / p50["plain_chain"], 3),
        "composite_calls": COMPOSITE_CALLS,
    }


def _bound_figures(plain_p50: float, bound_p50: float) -> dict[str, Any]:
    return {
        "dspy_predict_us_p50": round(plain_p50, 1),
        "bound_predict_us_p50": round(bound_p50, 1),
        "bound_to_plain_ratio": round(bound_p50 / plain_p50, 3),
        "dspy_predict_path": PLAIN_PATH,
        "bound_predict_path": BOUND_PATH,
        "dspy_calls": CALLS,
    }


def _remote_module() -> Any:
    import dspy

    from dspex.binding import bind
    from dspex.variables import Variable

    temperature = Variable(float, 0.7, name="temperature", min=0.0, max=2.0)
    return bind(dspy.Predict("question -> answer"), temperature=temperature)


def _burn(rounds: int) -> bytes:
    """The simulation LM's CPU load (chained SHA-256), without importing DSPy."""
    digest = b"dspex/sim"
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest


def _burn_setup() -> Callable[[int], bytes]:
    return _burn


def _speedup(batches: dict[int, Callable[[], Any]]) -> tuple[float, dict[int, float]]:
    """Median 2-worker/1-worker throughput ratio over interleaved rounds (same load for both).

    Returns:
        The median ratio and the median calls per second per pool size.
    """
    for batch in batches.values():  # warm-up: every worker has taken calls
        batch()
    ratios: list[float] = []
    rates: dict[int, list[float]] = {workers: [] for workers in batches}
    for _ in range(SPEEDUP_ROUNDS):
        for workers, batch in batches.items():
            start = time.perf_counter()
            batch()
            rates[workers].append(SPEEDUP_CALLS / (time.perf_counter() - start))
        ratios.append(rates[2][-1] / rates[1][-1])
    return statistics.median(ratios), {w: statistics.median(r) for w, r in rates.items()}


def _pool_speedup() -> float:
    """The baseline: the same ratio for bare worker processes burning the same CPU."""
    from dspex.runtime import WorkerPool

    with (
        WorkerPool(_burn_setup, workers=1, name="dspex-bench") as one,
        WorkerPool(_burn_setup, workers=2, name="dspex-bench") as two,
    ):
        work = [REMOTE_CPU_WORK] * SPEEDUP_CALLS
        ratio, _ = _speedup({1: lambda: one.map(work), 2: lambda: two.map(work)})
    return ratio


def _remote_speedup(module: Any, session: Any) -> tuple[float, dict[int, float]]:
    import dspy

    from dspex.remote import Remote
    from dspex.sim import SimLM

    inputs = [{"question": f"What is {n} + 1?"} for n in range(SPEEDUP_CALLS)]
    with (
        dspy.context(lm=SimLM("dspex/sim", cpu_work=REMOTE_CPU_WORK)),
        Remote(module, workers=1, session=session) as one,
        Remote(module, workers=2, session=session) as two,
    ):
        return _speedup(
            {
                1: lambda: one.map(inputs, progress=False),
                2: lambda: two.map(inputs, progress=False),
            }
        )


def _remote_figures() -> dict[str, Any]:
    """Latency through a 1-worker Remote, and the 2-worker/1-worker throughput ratio."""
    import dspy

    from dspex.remote import Remote
    from dspex.session import Session
    from dspex.sim import SimLM

    module = _remote_module()
    question = {"question": "What is 12 + 30?"}
    with Session() as session, dspy.context(lm=SimLM("dspex/sim"), disable_history=True):
        with Remote(module, workers=1) as remote:
            calls: dict[str, Callable[[], Any]] = {
                "remote": lambda: remote(**question),
                "local": lambda: module(**question),
            }
            for call in calls.values():
                for _ in range(REMOTE_WARMUP):
                    call()
            samples: dict[str, list[float]] = {key: [] for key in calls}
            for _ in range(REMOTE_CALLS):
                for key, call in calls.items():
                    start = time.perf_counter_ns()
                    call()
                    samples[key].append((time.perf_counter_ns() - start) / 1e6)
        speedup, throughput = _remote_speedup(module, session)
    return {
        "remote_call_ms_p50": round(statistics.median(samples["remote"]), 3),
        "remote_local_call_ms_p50": round(statistics.median(samples["local"]), 3),
        "remote_throughput_1w_per_s": round(throughput[1], 2),
        "remote_throughput_2w_per_s": round(throughput[2], 2),
        "remote_speedup_2w": round(speedup, 3),
        "pool_speedup_2w": round(_pool_speedup(), 3),
        "remote_path": (
            "dspex.Remote(bind(dspy.Predict(sig), temperature=), workers=1)(question=...) in a "
            "promoted local session (embedded store on a unix socket), SimLM shipped from "
            "dspy.settings; local figure: the same module called in process"
        ),
        "remote_speedup_path": (
            f"median over {SPEEDUP_ROUNDS} interleaved rounds of a map of {SPEEDUP_CALLS} calls, "
            f"SimLM(cpu_work={REMOTE_CPU_WORK}) per call, 2 workers vs 1 worker"
        ),
    }
