"""Layer 1 runtime: the Ray actor class behind :class:`dspex.runtime.RayPool` (no ray import).

:class:`RayWorker` is a plain class; the pool turns it into an actor with ``ray.remote`` when it
starts, so importing this module (in the parent or in a Ray worker process) never loads ray by
itself. It mirrors the spawned worker of :mod:`dspex.runtime._worker`: the constructor unpickles
the setup callable and calls it once to get the handler (an exception there fails the actor's
creation, and the pool reports it), and :meth:`RayWorker.call` runs one pickled
``(call_id, payload)`` message and returns the same pickled reply a spawned worker sends.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from dspex.runtime._pickling import loads
from dspex.runtime._worker import Handler, run_call

__all__ = ["RayWorker"]


class RayWorker:
    """One actor of a Ray pool: set up once, then run calls one at a time.

    Args:
        setup_blob: the cloudpickled setup callable (it reaches the actor as a Ray object, so
            the actor's creation task only holds its object id).
    """

    def __init__(self, setup_blob: bytes) -> None:
        setup = loads(setup_blob)
        handler = setup()
        if not callable(handler):
            raise TypeError(f"setup returned {type(handler).__qualname__}, not a callable handler")
        self._handler: Handler = handler

    def ready(self) -> tuple[int, str]:
        """Answer once setup is done: this actor's process id and host name."""
        return os.getpid(), socket.gethostname()

    def call(self, message: bytes) -> bytes:
        """Run one pickled call and return the pickled reply (result or raised exception)."""
        return run_call(message, self._handler)

    def __repr__(self) -> str:  # what Ray shows in log prefixes: never the setup's contents
        return f"RayWorker(pid={os.getpid()})"

    def ping(self) -> Any:
        """A no-op call (benchmarks measure the bare actor round trip with it)."""
        return None
