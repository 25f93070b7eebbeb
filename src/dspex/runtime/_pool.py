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
from collections.abc import Callable, Iterable
from concurrent.futures import Future, as_completed
from types import TracebackType
from typing import Any, NamedTuple

from dspex.errors import WorkerError, WorkerSetupError
from dspex.runtime import _pickling
from dspex.runtime._dispatch import DispatchCore
from dspex.runtime._slot import CallJob, SlotState

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called by :meth:`WorkerPool.map` as results arrive."""

_LIVE_POOLS: set[WorkerPool] = set()
_LIVE_LOCK = threading.Lock()


class WorkerStatus(NamedTuple):
    """A snapshot of one worker seat, from :meth:`WorkerPool.status`."""

    worker: int
    pid: int | None
    state: SlotState
    alive: bool
    starts: int


class WorkerPool:
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

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every worker has finished setup and is idle or busy.

        Raises:
            WorkerSetupError: setup kept failing and the pool is broken.
            WorkerError: the pool is closed.
            WorkerTimeoutError: not ready within ``timeout`` seconds.
        """
        self._core.wait_ready(timeout)

    def submit(self, payload: Any, *, timeout: float | None = None) -> Future[Any]:
        """Queue ``handler(payload)`` on the next idle worker and return its future.

        Args:
            payload: any cloudpickle-able value, passed to the handler.
            timeout: seconds the call may *run* on a worker (queueing time is not counted);
                past it the future fails with :class:`~dspex.errors.WorkerTimeoutError` and the
                worker is replaced. A call retried after a crash gets its full timeout again.
                None means no limit.

        Raises:
            WorkerError: the payload cannot be pickled (the message names the failing part),
                or the pool is closed.
            WorkerSetupError: the pool is broken because setup kept failing.
        """
        return self._submit(payload, timeout, "payload")

    def call(self, payload: Any, *, timeout: float | None = None) -> Any:
        """Run ``handler(payload)`` on a worker and return its result (see :meth:`submit`).

        Raises:
            Exception: whatever the handler raised, with the worker traceback as ``__cause__``.
            WorkerCrashedError: the worker died and no retry was left.
            WorkerTimeoutError: the call ran longer than ``timeout``.
            WorkerError: the pool is closed, or the call or its outcome could not be pickled.
        """
        future = self._submit(payload, timeout, "payload")
        try:
            return future.result()
        finally:
            future.cancel()  # only takes effect if the caller was interrupted while queued

    def map(
        self,
        payloads: Iterable[Any],
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run the handler on every payload in parallel; results come back in input order.

        Args:
            payloads: the payloads, one call each.
            timeout: per-call running-time limit, as in :meth:`submit`.
            progress: called as ``progress(done, total)`` once before the first result and
                after each one (in the calling thread), e.g. to drive a progress bar.
            return_exceptions: put each failed call's exception in its result slot instead of
                raising the first failure.

        Raises:
            Exception: the first failure (in completion order) unless ``return_exceptions``;
                calls that have not started yet are then cancelled.
        """
        return map_calls(
            lambda payload, label: self._submit(payload, timeout, label),
            payloads,
            progress,
            return_exceptions,
        )

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

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        states = ",".join(status.state for status in self.status())
        return f"<WorkerPool workers={self.workers} [{states}]>"

    def _submit(self, payload: Any, timeout: float | None, label: str) -> Future[Any]:
        if timeout is not None and not timeout > 0:
            raise WorkerError(f"timeout must be a positive number of seconds, got {timeout!r}")
        call_id = next(self._call_ids)
        job = CallJob(call_id, pickle_call(call_id, payload, label), Future(), timeout)
        self._core.submit(job)
        return job.future


def pickle_call(call_id: int, payload: Any, label: str) -> bytes:
    """Pickle one call message ``(call_id, payload)``, or explain which part cannot travel.

    Raises:
        WorkerError: the payload cannot be pickled (the message names the failing part).
    """
    try:
        return _pickling.dumps((call_id, payload))
    except Exception as exc:
        reason = _pickling.explain_unpicklable(payload, label)
        raise WorkerError(
            f"the call {label} cannot be pickled for a worker process: {reason}. "
            "Pass plain data (or objects cloudpickle can serialize) as payloads."
        ) from exc


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


def map_calls(
    submit: Callable[[Any, str], Future[Any]],
    payloads: Iterable[Any],
    progress: ProgressCallback | None,
    return_exceptions: bool,
) -> list[Any]:
    """The ``map`` of every pool: submit each payload, await all, results in input order.

    ``submit(payload, label)`` queues one call. On the first failure (unless
    ``return_exceptions``) the calls not started yet are cancelled.
    """
    futures: list[Future[Any]] = []
    try:
        for index, payload in enumerate(payloads):
            futures.append(submit(payload, f"payloads[{index}]"))
        await_all(futures, progress, return_exceptions)
        return [outcome(future) for future in futures]
    finally:
        for future in futures:
            future.cancel()


def await_all(
    futures: list[Future[Any]], progress: ProgressCallback | None, return_exceptions: bool
) -> None:
    total = len(futures)
    if progress is not None:
        progress(0, total)
    for done, future in enumerate(as_completed(futures), start=1):
        if not return_exceptions and future.exception() is not None:
            future.result()  # raises the failure
        if progress is not None:
            progress(done, total)


def outcome(future: Future[Any]) -> Any:
    error = future.exception()
    return error if error is not None else future.result()


@atexit.register
def _close_live_pools() -> None:
    """Close every pool still open when the interpreter exits (no orphaned workers)."""
    with _LIVE_LOCK:
        pools = list(_LIVE_POOLS)
    for pool in pools:
        pool.close(grace=1.0)
