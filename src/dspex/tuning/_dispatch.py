"""Layer 3 (tuning): a teleprompter's untraced program calls run on ``dspex.Remote`` workers.

A teleprompter runs the program two ways. *Traced* calls (bootstrapping demos: BootstrapFewShot,
MIPROv2's demo sets, SIMBA, GEPA) run inside ``dspy.context(trace=[])`` and the teleprompter
then reads ``dspy.settings.trace``, which holds live predictor objects: those calls must run
here. *Untraced* calls (scoring with ``dspy.Evaluate``, fanned out over its ``num_threads``)
only need the prediction: those can run anywhere.

So ``dspex.compile(..., workers=N)`` runs the teleprompter under ``dspy.context(trace=None)`` and
hands it a copy of the program whose class also has :class:`Dispatching`: a call made while no
trace is recorded pickles the candidate program, exactly as the teleprompter set it up on its
copy (its assigned instructions and demos win over the variables, as in this process), and runs
it on a worker of the session; the metric still runs here, on the returned prediction. Copies
the teleprompter makes keep the dispatching class; a pickle is the program's own class, so the
worker runs the plain bound program.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import cloudpickle

from dspex.session import Session

__all__ = ["Dispatching", "Pool", "RunShipped", "dispatching", "undispatched"]


class RunShipped:
    """The worker side: unpickle the candidate program and run it on the inputs."""

    def __call__(self, program: bytes, inputs: dict[str, Any]) -> Any:
        """Run one shipped call (inside the worker's session)."""
        return cloudpickle.loads(program)(**inputs)


class Pool:
    """A ``dspex.Remote`` of :class:`RunShipped` and the count of the calls it ran."""

    def __init__(self, workers: int, session: Session, timeout: float | None) -> None:
        from dspex.remote import Remote

        self.remote = Remote(RunShipped(), workers=workers, timeout=timeout, session=session)
        self.calls = 0
        self._lock = threading.Lock()

    def call(self, program: Any, inputs: dict[str, Any]) -> Any:
        """Run ``program(**inputs)`` on a worker: the program as it is now, pickled."""
        blob = cloudpickle.dumps(_twin(program))
        result = self.remote(program=blob, inputs=inputs)
        with self._lock:
            self.calls += 1
        return result

    def close(self) -> None:
        """Stop the workers."""
        self.remote.close()


class Dispatching:
    """Mixin of the teleprompter's copy: untraced calls run on the class's ``_dspex_pool``."""

    _dspex_pool: Pool

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pool = type(self)._dspex_pool
        if args or _here(self) or pool.remote.closed:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        return pool.call(self, kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        cls = type(self)
        base = cls.__bases__[1]
        own = getattr(base, "__deepcopy__", None)
        if own is not None:
            new = own(self, memo)
        else:
            new = object.__new__(base)
            memo[id(self)] = new
            new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        new.__class__ = cls
        return new

    def __reduce_ex__(self, protocol: Any) -> Any:
        return _twin(self).__reduce_ex__(protocol)


def _here(program: Any) -> bool:
    """Whether a call must run in this process.

    When a trace is recorded; when the teleprompter replaced ``forward`` on the instance
    (``bootstrap_trace_data``, used by GEPA, records traces that way inside ``Evaluate``); and,
    after the run (the pool closed), for copies the teleprompter kept (``candidate_programs``).
    """
    import dspy

    return dspy.settings.trace is not None or "forward" in program.__dict__


def dispatching(program: Any, pool: Pool) -> Any:
    """A deep copy of ``program`` whose untraced calls run on ``pool``."""
    base = type(program)
    cls = type(
        base.__name__,
        (Dispatching, base),
        {"__module__": base.__module__, "__qualname__": base.__qualname__, "_dspex_pool": pool},
    )
    student = program.deepcopy()
    student.__class__ = cls
    return student


def undispatched(program: Any) -> Any:
    """``program`` switched back to its own class (in place), when it dispatches."""
    if isinstance(program, Dispatching):
        program.__class__ = type(program).__bases__[1]
    return program


def _twin(program: Any) -> Any:
    """The same object state under the program's own class (what pickles and runs remotely)."""
    cls = type(program)
    if not isinstance(program, Dispatching):
        return program
    twin: Any = object.__new__(cls.__bases__[1])
    twin.__dict__ = program.__dict__
    return twin
