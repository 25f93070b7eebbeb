"""Layer 1 runtime: spawned worker processes that run a picklable target.

Knows nothing about sessions, variables, gRPC or DSPy. :class:`WorkerPool` ships a setup callable
to each worker once (cloudpickle) and runs ``handler(payload)`` there per call, with crash
restart, retries and per-call timeouts.
"""

from __future__ import annotations

from dspex.runtime._outcome import RemoteTraceback, remote_traceback
from dspex.runtime._pool import ProgressCallback, WorkerPool, WorkerStatus

__all__ = ["ProgressCallback", "RemoteTraceback", "WorkerPool", "WorkerStatus", "remote_traceback"]
