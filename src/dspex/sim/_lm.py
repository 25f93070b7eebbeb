"""Layer 3 (simulation): SimLM, an offline, deterministic stand-in for a language model.

SimLM is a real ``dspy.LM`` whose engine (DSPy 3.4's ``complete(Request) -> Response``
interface) computes a reply locally instead of calling a provider. It is a *simulation*: it does
not understand language. It reads the adapter prompt (fields, types, instructions, demos), looks
the question up in what it knows (see :mod:`dspex.sim._oracle`) and answers correctly with a
probability that rises with better instructions, lower temperature, more demos and a larger
model name, so tuning dspex variables visibly moves a metric. Same request, same reply.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dspy
from dspy.clients.base_lm import LM_CLASS_STATE_KEY
from dspy.lm15 import (
    Message,
    Response,
    StreamDeltaEvent,
    TextDelta,
    TextPart,
    Usage,
    response_to_events,
)

from dspex.errors import DspexError
from dspex.sim._oracle import decide, unit_hash
from dspex.sim._prompt import ParsedPrompt, format_reply, parse_prompt, value_for_type

__all__ = ["SIM_PREFIX", "AsyncSimEngine", "SimEngine", "SimLM", "is_sim_model", "simulate"]

SIM_PREFIX = "dspex/sim"
_DEFAULT_TEMPERATURE = 1.0  # what providers assume when no temperature is sent
_REASONING_FIELDS = frozenset({"reasoning", "rationale", "thought", "next_thought"})


def is_sim_model(name: str) -> bool:
    """True for ``"dspex/sim"`` and ``"dspex/sim-<variant>"`` model names."""
    return name == SIM_PREFIX or name.startswith(SIM_PREFIX + "-")


def burn_cpu(rounds: int, seed: bytes = b"dspex") -> bytes:
    """Spend deterministic CPU time: ``rounds`` chained SHA-256 hashes (~0.3-1 us each)."""
    digest = seed
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest


def _system_text(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    return "".join(getattr(part, "text", "") or "" for part in system)


def simulate(request: Any) -> Any:
    """Compute the simulated ``dspy.lm15.Response`` for one ``dspy.lm15.Request``."""
    messages = [(m.role, m.text or "") for m in request.messages]
    parsed = parse_prompt(_system_text(request.system), messages)
    temperature = request.config.temperature
    temperature = _DEFAULT_TEMPERATURE if temperature is None else float(temperature)
    model = request.model
    answer = decide(
        parsed.question,
        instructions=parsed.instructions,
        temperature=temperature,
        demos=parsed.demos,
        model=model,
        prompt=parsed.text,
    )
    text = _reply(parsed, answer, temperature, model)
    tag = hashlib.sha256(text.encode()).hexdigest()[:12]
    prompt_tokens = (len(parsed.text) + len(parsed.instructions)) // 4 + 1
    return Response(
        id=f"sim-{tag}",
        model=model,
        message=Message.assistant([TextPart(text)]),
        finish_reason="stop",
        usage=Usage(input_tokens=prompt_tokens, output_tokens=len(text) // 4 + 1),
    )


def _reply(parsed: ParsedPrompt, answer: str | None, temperature: float, model: str) -> str:
    trace = f"{unit_hash(model, parsed.instructions, temperature, parsed.text):.6f}"[2:8]
    if not parsed.outputs:
        return answer if answer is not None else f"Simulated reply {trace} from {model}."
    values: dict[str, Any] = {}
    answer_slot = next((n for n, _ in parsed.outputs if n not in _REASONING_FIELDS), None)
    for name, type_text in parsed.outputs:
        if name in _REASONING_FIELDS:
            values[name] = (
                f"Simulated reasoning {trace} by {model} at temperature {temperature:.2f} "
                f"about: {parsed.question[:60]}"
            )
        else:
            given = answer if name == answer_slot else None
            values[name] = value_for_type(type_text, given, f"sim {name} {trace}")
    return format_reply(parsed.style, values)


_PIECE = re.compile(r"\S+\s*|\s+")


def _stream_events(response: Any) -> Iterator[Any]:
    """``response`` as lm15 stream events, its text in word-sized deltas (as providers stream).

    Streaming consumers (DSPy's stream listeners) see field markers and values arrive over
    several chunks, as from a real provider, not the whole reply in one chunk.
    """
    for event in response_to_events(response):
        delta = getattr(event, "delta", None)
        if not isinstance(delta, TextDelta) or not delta.text:
            yield event
            continue
        for index, piece in enumerate(_PIECE.findall(delta.text)):
            if index:
                piece_delta = TextDelta(piece, part_index=delta.part_index)
            else:
                piece_delta = dataclasses.replace(delta, text=piece)
            yield StreamDeltaEvent(delta=piece_delta)


class SimEngine:
    """The synchronous engine behind :class:`SimLM` (``complete(Request) -> Response``).

    Args:
        cpu_work: SHA-256 rounds burnt per call (deterministic CPU load for benchmarks).
        latency: seconds to sleep per call (simulated network time).
    """

    def __init__(self, cpu_work: int = 0, latency: float = 0.0) -> None:
        if cpu_work < 0 or latency < 0:
            raise DspexError(
                f"cpu_work={cpu_work!r} and latency={latency!r} must be >= 0",
                cpu_work=cpu_work,
                latency=latency,
            )
        self.cpu_work = int(cpu_work)
        self.latency = float(latency)

    def complete(self, request: Any) -> Any:
        """Simulate one completion."""
        if self.cpu_work:
            burn_cpu(self.cpu_work, request.model.encode())
        if self.latency:
            time.sleep(self.latency)
        return simulate(request)

    def stream(self, request: Any) -> Iterator[Any]:
        """Stream the completion as lm15 events (see :func:`_stream_events`)."""
        return _stream_events(self.complete(request))

    def close(self) -> None:
        """Nothing to release."""

    def dump_state(self) -> dict[str, Any]:
        """JSON state: the two knobs."""
        return {"cpu_work": self.cpu_work, "latency": self.latency}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> SimEngine:
        """Rebuild from :meth:`dump_state`."""
        return cls(**state)


class AsyncSimEngine:
    """The async twin of :class:`SimEngine` (sleeps with ``asyncio.sleep``)."""

    def __init__(self, sync: SimEngine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        """Simulate one completion without blocking the event loop on latency."""
        if self.sync.cpu_work:
            burn_cpu(self.sync.cpu_work, request.model.encode())
        if self.sync.latency:
            await asyncio.sleep(self.sync.latency)
        return simulate(request)

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        """Stream the completion as lm15 events (see :func:`_stream_events`)."""
        for event in _stream_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        """Nothing to release."""


class SimLM(dspy.LM):  # type: ignore[misc]
    """The built-in offline simulation LM: deterministic, no network, no API key.

    This is a simulation for demos, tests and benchmarks, not a model. It answers the bundled dev
    set (:func:`dspex.sim.load_devset`) and two-number arithmetic correctly with a probability that
    depends on the instructions, the temperature, the number of demos and the model name
    (``dspex/sim-small`` < ``dspex/sim`` < ``dspex/sim-large``); other questions get filler
    values of the right type, so any signature parses with the Chat, JSON or XML adapter.

    Args:
        model: ``"dspex/sim"`` or ``"dspex/sim-<variant>"``.
        temperature: default temperature (None: treated as 1.0, as providers do).
        max_tokens: default max_tokens (recorded, not enforced).
        cpu_work: SHA-256 rounds burnt per call, a deterministic CPU-bound load.
        latency: seconds slept per call, a simulated network delay.
        cache: use DSPy's response cache (off by default so ``cpu_work`` is spent every call).
        **kwargs: other default request parameters, as for ``dspy.LM``.

    Raises:
        DspexError: ``model`` is not a ``dspex/sim`` name, or a knob is negative.

    Examples:
        >>> import dspy, dspex
        >>> qa = dspy.Predict(dspy.Signature("question -> answer", "Calculate step by step."))
        >>> with dspy.context(lm=dspex.SimLM("dspex/sim-large", temperature=0.0)):
        ...     qa(question="What is 12 * 7?").answer
        '84'
    """

    def __init__(
        self,
        model: str = SIM_PREFIX,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cpu_work: int = 0,
        latency: float = 0.0,
        cache: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, str) or not is_sim_model(model):
            raise DspexError(
                f"SimLM model {model!r} is not a simulation name; use 'dspex/sim' or "
                "'dspex/sim-<variant>' (e.g. 'dspex/sim-large'), or dspy.LM for real models",
                model=model,
            )
        engine = SimEngine(cpu_work, latency)
        super().__init__(
            model,
            temperature=temperature,
            max_tokens=max_tokens,
            cache=cache,
            engine=engine,
            async_engine=AsyncSimEngine(engine),
            **kwargs,
        )

    @property
    def cpu_work(self) -> int:
        """SHA-256 rounds burnt per call."""
        return int(self._engine_spec.cpu_work)

    @property
    def latency(self) -> float:
        """Seconds slept per call."""
        return float(self._engine_spec.latency)

    def dump_state(self) -> dict[str, Any]:
        """State for ``dspy`` save/load: model, knobs and default request parameters."""
        kwargs = {k: v for k, v in self.kwargs.items() if k != "api_key"}
        return {
            LM_CLASS_STATE_KEY: f"{type(self).__module__}.{type(self).__qualname__}",
            "model": self.model,
            "cache": self.cache,
            "cpu_work": self.cpu_work,
            "latency": self.latency,
            **kwargs,
        }

    @classmethod
    def load_state(cls, state: dict[str, Any], *, allow_custom_lm_class: bool = False) -> SimLM:
        """Rebuild a SimLM from :meth:`dump_state` (it has no secrets to guard)."""
        state = dict(state)
        state.pop(LM_CLASS_STATE_KEY, None)
        return cls(**state)

    def __repr__(self) -> str:
        return f"SimLM({self.model!r}, cpu_work={self.cpu_work}, latency={self.latency})"
