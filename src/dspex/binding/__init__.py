"""Layer 3: ``dspex.bind``, which feeds session variables into DSPy's per-call hooks.

``bind(module, temperature=..., instructions=..., demos=..., lm=...)`` returns a
:class:`BoundModule`, a ``dspy.Module`` that wraps ``module``. On every call it reads the bound
variables from the current session **once** (one consistent snapshot, at one revision) and runs
``module`` with those values applied to every predictor inside it, for that call only.

How the values reach each predictor
-----------------------------------
DSPy's per-call hooks are the ``config=``, ``signature=``, ``demos=`` and ``lm=`` keyword
arguments of ``Predict``; ``Predict.forward`` merges them and hands the result to the adapter:
``adapter(lm, lm_kwargs=config, signature=signature, demos=demos, inputs=...)``. A composite
module (``ChainOfThought``, ``ReAct``, a custom module) does not pass keyword arguments down to
its predictors, so the wrapper cannot simply add them to its own call. Instead it enters
``dspy.context(adapter=<hook adapter>, dspex_session=<session>)`` for the duration of the call
(plus ``lm=`` when the model is bound, so predictors run even with no LM configured). The hook
adapter is a thin proxy around the adapter that was in effect (or a
``ChatAdapter``): each predictor call inside the block reaches it with DSPy's own merged
``lm, lm_kwargs, signature, demos``, and it replaces exactly the bound parts before delegating:

* LM keyword arguments (temperature, max_tokens, ...) are merged over ``lm_kwargs``;
* ``instructions`` replace the signature's instructions via ``signature.with_instructions`` (a
  new class, cached; for ``ReAct``, whose agent prompt *starts* with the task instructions,
  only that task part is replaced, so the tool list survives);
* ``demos`` replace the demos; ``lm`` replaces the model (resolved by a cached factory:
  ``dspex/sim...`` gives the built-in simulation LM, anything else ``dspy.LM(name)``).

Alternatives rejected: setting attributes on predictors (races between threads, and the
original bridge's ``predictor.temperature`` is never read by DSPy); per-call copies of the
module (breaks predictor identity, which optimizers use to map traces to predictors); patching
``Predict`` (a global change to DSPy's private methods); callbacks (they cannot change inputs).
The proxy reports the wrapped adapter's class, so DSPy's ``isinstance(settings.adapter, ...)``
checks (streaming) still see a ``JSONAdapter`` when one is configured.

Nothing shared is mutated: the module, its predictors, their ``config``/``signature``/``demos``
and ``dspy.settings`` globals stay as they are; the proxy lives only in this call's
``dspy.context`` overlay. DSPy copies that overlay into ``dspy.Parallel`` / ``Evaluate``
threads, ``asyncify`` and async tasks, so sub-calls made inside the module see the same values
and the same session.
Bound values win over the module's own ``config`` and over per-call arguments; a nested
``bind`` wins over an outer one for the hooks it binds. Like ``dspy.context(lm=...)``, the
values apply to every predictor that runs inside the wrapped call.
"""

from __future__ import annotations

from dspex.binding._adapter import resolve_lm
from dspex.binding._bound import BoundModule, bind
from dspex.binding._hooks import HOOKS, LM_KWARGS
from dspex.binding._state import SECTION, dump_variables, prepare_load

__all__ = [
    "HOOKS",
    "LM_KWARGS",
    "SECTION",
    "BoundModule",
    "bind",
    "dump_variables",
    "prepare_load",
    "resolve_lm",
]
