"""Layer 3: ``dspex.tune``, Optuna studies tuning session variables under an optimization lock.

dspex has no search algorithm of its own: the search space is made of Optuna distributions read
from the variables' types and constraints (:func:`search_space`), and Optuna's samplers,
pruners and storages do the rest. What dspex adds is the session: each trial's values are
written to the session under the optimizer's lock, evaluated with exactly those values (also
when trials run concurrently, in this process or in ``dspex.Remote`` workers), the progress is
published on the lock, and the best values are kept in one atomic batch.

DSPy teleprompters run through :func:`compile` (``dspex.compile``), on the same pieces: it holds
``session.optimizing(...)`` on the variables bound to the program's instructions, demos and LM
keywords, publishes the teleprompter's progress on that lock, and, with ``workers=N``, runs the
teleprompter's untraced program calls (its ``dspy.Evaluate`` scoring) on a ``dspex.Remote`` pool
with each candidate's values (:mod:`dspex.tuning._dispatch`). It does not need :func:`keep` or
:func:`pinned`: a teleprompter's candidates live on its own copy of the program, never in the
session, so the only write of a run is binding's ``dspex.publish`` of the compiled values, one
atomic batch that :meth:`CompileResult.rollback` undoes.

Optuna is imported only when a run starts (``pip install 'dspex[tune]'``); ``import dspex``
never loads it. :func:`compile` loads DSPy on first access.
"""

from __future__ import annotations

import typing

from dspex.tuning._keep import keep
from dspex.tuning._pinned import pinned
from dspex.tuning._result import TuneResult
from dspex.tuning._space import search_space
from dspex.tuning._tune import tune

if typing.TYPE_CHECKING:
    from dspex.tuning._compile import CompileResult, compile


def __getattr__(name: str) -> typing.Any:
    # compile needs DSPy (about a second to import), which the Optuna path does not.
    if name not in ("CompileResult", "compile"):
        raise AttributeError(f"module 'dspex.tuning' has no attribute {name!r}")
    from dspex.tuning import _compile

    value = getattr(_compile, name)
    globals()[name] = value
    return value


__all__ = ["CompileResult", "TuneResult", "compile", "keep", "pinned", "search_space", "tune"]
