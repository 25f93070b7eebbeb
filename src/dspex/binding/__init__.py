"""Layer 3: ``dspex.bind``, which feeds session variables into DSPy's per-call hooks.

``bind(module, temperature=..., instructions=..., demos=..., lm=...)`` binds ``module`` in place
and returns it: on every call it reads the bound variables from the current session **once** (one
consistent snapshot) and the LM sees exactly what plain DSPy sends when those values are
configured the natural DSPy way (the *fidelity rule*, proved by ``tests/fidelity``):

* LM keywords (temperature, max_tokens, ...) as ``dspy.context(lm=lm.copy(**kwargs))`` around
  the bound module's call;
* the chosen model (``lm``) as the context LM of that call: a model name, or the key of a
  :class:`dspex.Choice` that maps keys to configured ``dspy.LM`` objects;
* ``instructions`` as each predictor's signature instructions (the task part: ReAct's protocol
  and tool list after it are kept);
* ``demos`` as each predictor's demos.

How the values reach DSPy
-------------------------
*The bind boundary.* ``module`` becomes an instance of a subclass of its own class (same name;
attribute paths, ``named_parameters()`` and ``named_predictors()`` unchanged, so saves made
before adopting ``bind`` still load). Its ``__call__``/``acall`` set DSPy's context overlay, as
``dspy.context(dspex_values=<snapshot>, dspex_session=<session>, lm=<bound LM copy>)`` would,
and run the module's own call. DSPy copies that overlay into ``dspy.Parallel``/``Evaluate``
threads, ``asyncify``, ``streamify`` and async tasks.

*Per-predictor hooks.* Every ``dspy.Predict`` inside ``module`` gets the same treatment; its
``signature``, ``demos``, ``config`` and ``lm`` attributes, which ``Predict.forward`` reads per
call, become properties that read the snapshot (see :mod:`dspex.binding._predictor`). Nothing
shared is written per call, so threads with different sessions never race.

DSPy's own per-call choices inside the module keep their plain-DSPy precedence: an inner
``dspy.context`` (another adapter, another LM) wins over the boundary; the rollout copies that
``BestOfN``, ``Refine``, ``SIMBA`` and bootstrap rounds make (``rollout_id`` at
``temperature=1.0``) keep their rollout id and temperature; a predictor's own ``lm`` wins over
the context LM. One deliberate addition: a bound module's predictors without an LM of their own
report the bound LM through ``get_lm()`` outside the call, so ``BestOfN(bind(...))`` copies it
(plain DSPy would find no LM there).

Assigned values and optimizers
------------------------------
Optimizers and ``load_state`` *assign* ``predictor.demos``/``predictor.signature`` (and
``reset_copy()`` clears demos). On a bound predictor an assigned value is kept on that
predictor object and wins over the variable, as a value set on a predictor wins in plain DSPy;
so compiling a bound program behaves exactly like compiling it in plain DSPy, and the compiled
program runs what was compiled. It is never hidden: when the assigned value differs from the
session's variable a warning names the variable, and :func:`dspex.publish` moves compiled
instructions, demos and config into the session's variables in one atomic batch (and hands the
hooks back to the variables; ``rollback()`` on its result restores the earlier values).

Alternatives rejected: a proxy adapter in ``dspy.context`` (an adapter switched inside
``forward`` dropped every binding, and rollout copies lost to the bound values); wrapper modules
(renamed parameters, so old saves failed to load); setting attributes per call (races); patching
``Predict`` globally.
"""

from __future__ import annotations

from dspex.binding._bound import BoundModule, bind, bound_variables
from dspex.binding._hooks import HOOKS, LM_KWARGS
from dspex.binding._models import resolve_lm
from dspex.binding._publish import Published, publish
from dspex.binding._state import (
    SECTION,
    SavedVariables,
    dump_variables,
    loading,
    one_read,
    prepare_load,
)

__all__ = [
    "HOOKS",
    "LM_KWARGS",
    "SECTION",
    "BoundModule",
    "Published",
    "SavedVariables",
    "bind",
    "bound_variables",
    "dump_variables",
    "loading",
    "one_read",
    "prepare_load",
    "publish",
    "resolve_lm",
]
