"""Layer 3: ``dspex.tune``, Optuna studies tuning session variables under an optimization lock.

dspex has no search algorithm of its own: the search space is made of Optuna distributions read
from the variables' types and constraints (:func:`search_space`), and Optuna's samplers,
pruners and storages do the rest. What dspex adds is the session: each trial's values are
written to the session under the optimizer's lock, evaluated with exactly those values (also
when trials run concurrently, in this process or in ``dspex.Remote`` workers), the progress is
published on the lock, and the best values are kept in one atomic batch.

DSPy teleprompters (issue 14, deliverable 2) are not here yet; they plug into the same pieces:
hold ``session.optimizing(...)`` on the variables the teleprompter changes, evaluate with
``dspy.Evaluate`` over the program's ``dspex.Remote`` pool, and publish the compiled values
(binding's ``publish``) through :func:`keep`, so ``TuneResult``-style rollback works the same.

Optuna is imported only when a run starts (``pip install 'dspex[tune]'``); ``import dspex``
never loads it.
"""

from __future__ import annotations

from dspex.tuning._keep import keep
from dspex.tuning._pinned import pinned
from dspex.tuning._result import TuneResult
from dspex.tuning._space import search_space
from dspex.tuning._tune import tune

__all__ = ["TuneResult", "keep", "pinned", "search_space", "tune"]
