"""Layer 3: the per-call hook adapter and the model factory behind ``dspex.bind``.

See :mod:`dspex.binding` for why a proxy adapter in ``dspy.context`` is the injection point.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple

import dspy

from dspex.errors import BindingError
from dspex.sim import SimLM, is_sim_model

__all__ = ["HookAdapter", "Overrides", "resolve_lm"]


# ------------------------------------------------------------------------------------------
# model factory

_LMS: dict[str, Any] = {}
_LMS_LOCK = threading.Lock()


def resolve_lm(name: str) -> Any:
    """Return the LM for a model name (cached: one instance per name and process).

    ``dspex/sim`` and ``dspex/sim-<variant>`` give the built-in :class:`~dspex.sim.SimLM`;
    anything else gives ``dspy.LM(name)``.

    Raises:
        BindingError: ``name`` is not a usable model name.
    """
    lm = _LMS.get(name)
    if lm is not None:
        return lm
    with _LMS_LOCK:
        lm = _LMS.get(name)
        if lm is None:
            try:
                lm = SimLM(name) if is_sim_model(name) else dspy.LM(name)
            except Exception as exc:  # dspy.LM raises several kinds; one clear error here
                raise BindingError(
                    f"model name {name!r} cannot be turned into an LM: {exc}", model=name
                ) from exc
            _LMS[name] = lm
    return lm


# ------------------------------------------------------------------------------------------
# the per-call hook adapter


@lru_cache(maxsize=1024)
def _instructed(signature: Any, text: str, task_signature: Any) -> Any:
    """``signature`` with ``text`` as its task instructions (cached: classes are costly).

    ``task_signature`` is the bound module's own signature (None when it has none). When the
    predictor's instructions merely *start* with the task instructions (``ReAct`` appends its
    agent protocol and tool list), only that task part is replaced.
    """
    current: str = signature.instructions
    task = getattr(task_signature, "instructions", None)
    if task and current != task and current.startswith(task):
        new = text + current[len(task) :]
    else:
        new = text
    return signature if new == current else signature.with_instructions(new)


class Overrides(NamedTuple):
    """The values one bound call applies (already resolved from the session).

    A NamedTuple: one is built per bound call, and tuples are the cheapest immutable record.
    """

    config: Mapping[str, Any]
    instructions: str | None = None
    task_signature: Any = None
    demos: list[Any] | None = None
    lm: Any = None

    def over(self, outer: Overrides) -> Overrides:
        """These overrides on top of an enclosing binding's (inner wins per hook)."""
        keep_outer_instructions = self.instructions is None
        return Overrides(
            config={**outer.config, **self.config},
            instructions=outer.instructions if keep_outer_instructions else self.instructions,
            task_signature=outer.task_signature
            if keep_outer_instructions
            else self.task_signature,
            demos=outer.demos if self.demos is None else self.demos,
            lm=outer.lm if self.lm is None else self.lm,
        )


class HookAdapter:
    """Adapter proxy applying one call's bound values, then delegating to the real adapter.

    ``__class__`` reports the wrapped adapter's class so DSPy code that checks the adapter type
    (``isinstance(settings.adapter, JSONAdapter)`` in streaming) keeps working; every other
    attribute is delegated too.
    """

    __slots__ = ("inner", "overrides")

    def __init__(self, inner: Any, overrides: Overrides) -> None:
        self.inner = inner
        self.overrides = overrides

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _apply(
        self, lm: Any, lm_kwargs: dict[str, Any], signature: type, demos: Any
    ) -> tuple[Any, dict[str, Any], type, Any]:
        o = self.overrides
        if o.config:
            lm_kwargs = {**lm_kwargs, **o.config}
        if o.instructions is not None:
            signature = _instructed(signature, o.instructions, o.task_signature)
        if o.demos is not None:
            demos = o.demos
        if o.lm is not None:
            lm = o.lm
        return lm, lm_kwargs, signature, demos

    def __call__(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: type,
        demos: Any,
        inputs: dict[str, Any],
        **extra: Any,
    ) -> Any:
        lm, lm_kwargs, signature, demos = self._apply(lm, lm_kwargs, signature, demos)
        return self.inner(
            lm, lm_kwargs=lm_kwargs, signature=signature, demos=demos, inputs=inputs, **extra
        )

    async def acall(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: type,
        demos: Any,
        inputs: dict[str, Any],
        **extra: Any,
    ) -> Any:
        """Async twin of ``__call__``."""
        lm, lm_kwargs, signature, demos = self._apply(lm, lm_kwargs, signature, demos)
        return await self.inner.acall(
            lm, lm_kwargs=lm_kwargs, signature=signature, demos=demos, inputs=inputs, **extra
        )
