"""Layer 1 runtime: worker processes that run a picklable target.

Knows nothing about sessions, variables, gRPC or DSPy. :class:`WorkerPool` ships a setup callable
to each spawned worker process once (cloudpickle) and runs ``handler(payload)`` there per call,
with crash restart, retries and per-call timeouts. :class:`dspex.runtime._ray.RayPool` (imported
only when asked for, since it loads ray) does the same on Ray actors.
"""

from __future__ import annotations

from dspex.runtime._calls import ProgressCallback
from dspex.runtime._outcome import RemoteTraceback, remote_traceback
from dspex.runtime._pool import WorkerPool, WorkerStatus

__all__ = ["ProgressCallback", "RemoteTraceback", "WorkerPool", "WorkerStatus", "remote_traceback"]
