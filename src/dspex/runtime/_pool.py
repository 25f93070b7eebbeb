"""Layer 1 runtime: a pool of spawned worker processes that run one picklable target.

The pool knows nothing about sessions, variables, gRPC or DSPy: it ships a ``setup`` callable
to each worker once, and runs ``handler(payload)`` there for each call. One dispatcher thread
owns the processes: it waits (``multiprocessing.connection.wait``) on every worker pipe, every
process sentinel and a wake-up pipe, so results, crashes and timeouts are all noticed at once.
Callers send work to an idle worker themselves under the pool lock, so a call costs one pickle,
one pipe write and one reply.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from dspex.errors import WorkerSetupError
from dspex.runtime import _pickling
from dspex.runtime._bootstrap import check_main_module
from dspex.runtime._calls import PoolCalls, ProgressCallback
from dspex.runtime._dispatch import DispatchCore
from dspex.runtime._slot import CallJob, SlotState

_LIVE_POOLS: set[WorkerPool] = set()
_LIVE_LOCK = threading.Lock()


class WorkerStatus(NamedTuple):
    """A snapshot of one worker seat, from :meth:`WorkerPool.status`."""

    worker: int
    pid: int | None
    state: SlotState
    alive: bool
    starts: int


class WorkerPool(PoolCalls):
    """A fixed-size pool of ``spawn``-ed worker processes running one picklable target.

    The parent cloudpickles ``setup`` once; each worker unpickles it and calls it once to get a
    ``handler``, then runs ``handler(payload)`` for every call it is given. Workers are started
    once and reused. A call goes to an idle worker and queues while all are busy.

    Workers use the ``spawn`` start method only (never ``fork``: the parent may hold live gRPC
    channels), so, as with any spawn pool, a script that creates a pool at import time needs an
    ``if __name__ == "__main__":`` guard. Workers never read the parent's stdin and ignore
    Ctrl-C; an unclosed pool is closed at interpreter exit.

    Failures never lose a call silently:

    - the handler raises: the exception re-raises in the caller with its own type, its worker
      traceback chained as ``__cause__`` (a :class:`~dspex.runtime.RemoteTraceback`); an
      exception that cannot cross the process boundary becomes a
      :class:`~dspex.errors.WorkerError` carrying the traceback text;
    - the worker process dies (segfault, ``os._exit``, ``kill -9``): a replacement starts (running
      setup again) and the call is retried on a healthy worker up to ``retries`` times, then fails
      with :class:`~dspex.errors.WorkerCrashedError` naming the pid and exit code;
    - a call runs longer than its ``timeout``: it fails with
      :class:`~dspex.errors.WorkerTimeoutError`, and the stuck worker is killed and replaced;
    - setup fails (raises, crashes or hangs past ``setup_timeout``) ``setup_attempts`` times in a
      row: the pool is broken, pending and later calls fail with
      :class:`~dspex.errors.WorkerSetupError` carrying the last setup error.

    Args:
        setup: a picklable zero-argument callable returning the handler, or the bytes of one
            already cloudpickled. It runs in every worker at start, so put imports and
            connections there, not in the parent.
        workers: number of worker processes (>= 1).
        retries: how many times a call lost to a worker crash is retried (>= 0).
        setup_timeout: seconds a worker may take to start and finish setup; None waits forever.
        setup_attempts: consecutive setup failures (pool-wide) after which the pool is broken.
        wait: block until every worker has finished setup (raising the setup error if setup
            keeps failing); with False, calls queue until workers are ready.
        name: prefix for the worker process names.

    Raises:
        WorkerSetupError: ``setup`` cannot be pickled (the message names the failing
            sub-object), an argument is invalid, or (with ``wait``) setup keeps failing.

    Example:
        >>> from dspex.runtime import WorkerPool
        >>> def setup():
        ...     import math
        ...     return math.sqrt
        >>> with WorkerPool(setup, workers=2) as pool:  # doctest: +SKIP
        ...     pool.call(16.0)
        ...     pool.map([1.0, 4.0, 9.0], progress=lambda done, total: None)
        4.0
        [1.0, 2.0, 3.0]
    """

    def __init__(
        self,
        setup: Callable[[], Callable[[Any], Any]] | bytes,
        *,
        workers: int = 1,
        retries: int = 1,
        setup_timeout: float | None = 60.0,
        setup_attempts: int = 3,
        wait: bool = True,
        name: str = "dspex-worker",
    ) -> None:
        check_positive_int("workers", workers, 1)
        check_positive_int("retries", retries, 0)
        check_positive_int("setup_attempts", setup_attempts, 1)
        blob = setup if isinstance(setup, bytes) else pickle_setup(setup)
        check_main_module()
        self._core = DispatchCore(
            multiprocessing.get_context("spawn"),
            blob,
            workers=workers,
            retries=retries,
            setup_timeout=setup_timeout,
            setup_attempts=setup_attempts,
            name=name,
        )
        self._call_ids = itertools.count()
        self._thread = threading.Thread(
            target=self._core.run, name=f"{name}-dispatch", daemon=True
        )
        self._core.start_workers()
        self._thread.start()
        with _LIVE_LOCK:
            _LIVE_POOLS.add(self)
        if wait:
            try:
                self.wait_ready(None)
            except BaseException:
                self.close(grace=0.0)
                raise

    @property
    def workers(self) -> int:
        """The number of worker seats (fixed for the pool's lifetime)."""
        return self._core.size

    @property
    def pids(self) -> list[int | None]:
        """The current process id of each worker seat (None while a seat has no process)."""
        return [status.pid for status in self.status()]

    def status(self) -> list[WorkerStatus]:
        """Return a snapshot of every worker seat: pid, state, liveness and start count."""
        return [WorkerStatus(*row) for row in self._core.snapshot()]

    def wait_ready(
        self, timeout: float | None = None, *, progress: ProgressCallback | None = None
    ) -> None:
        """Block until every worker has finished setup and is idle or busy.

        Args:
            timeout: seconds to wait (None: no limit).
            progress: called as ``progress(ready, total)`` at once and whenever another
                worker is ready, e.g. to draw a bar while a large pool starts.

        Raises:
            WorkerSetupError: setup kept failing and the pool is broken.
            WorkerError: the pool is closed.
            WorkerTimeoutError: not ready within ``timeout`` seconds.
        """
        self._core.wait_ready(timeout, progress)

    def close(self, *, grace: float = 5.0) -> None:
        """Stop the workers and the dispatcher; safe to call twice and from ``atexit``.

        Calls still queued fail with :class:`~dspex.errors.WorkerError`. Running calls get
        ``grace`` seconds to finish; then their workers are terminated (and killed if they
        ignore it) and those calls fail. Every child process is reaped.
        """
        self._core.close(grace)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with _LIVE_LOCK:
            _LIVE_POOLS.discard(self)

    def __repr__(self) -> str:
        states = ",".join(status.state for status in self.status())
        return f"<WorkerPool workers={self.workers} [{states}]>"

    def _enqueue(self, job: CallJob) -> None:
        self._core.submit(job)


def check_positive_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise WorkerSetupError(f"{name} must be an integer >= {minimum}, got {value!r}")


def pickle_setup(setup: Callable[[], Any]) -> bytes:
    """Cloudpickle the setup target, or explain exactly which part cannot travel."""
    if not callable(setup):
        raise WorkerSetupError(
            f"setup must be a zero-argument callable returning the handler (or its pickled "
            f"bytes), got {_pickling.describe(setup)}"
        )
    try:
        return _pickling.dumps(setup)
    except Exception as exc:
        reason = _pickling.explain_unpicklable(setup, "setup")
        raise WorkerSetupError(
            f"the worker setup {_pickling.describe(setup)} cannot be pickled for worker "
            f"processes: {reason}. Make that object picklable (drop live locks, clients, "
            "open files or threads; recreate them inside setup) or leave it out of the target.",
            target=_pickling.describe(setup),
        ) from exc


@atexit.register
def _close_live_pools() -> None:
    """Close every pool still open when the interpreter exits (no orphaned workers)."""
    with _LIVE_LOCK:
        pools = list(_LIVE_POOLS)
    for pool in pools:
        pool.close(grace=1.0)
