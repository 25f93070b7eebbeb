"""Layer 1 runtime: the caller side every worker pool shares (submit, call, map).

:class:`PoolCalls` turns a payload into a queued :class:`~dspex.runtime._slot.CallJob` (checked
timeout, pickled once with a call id) and builds ``submit``, ``call``, ordered ``map`` with
progress, and the context manager on top of two methods a pool provides: ``_enqueue(job)`` and
``close(grace=)``. :class:`~dspex.runtime.WorkerPool` (spawned processes) and
:class:`~dspex.runtime._ray.RayPool` (Ray actors) differ only below that line.
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, as_completed
from contextlib import contextmanager
from typing import Any, TypeVar

from dspex.errors import WorkerError
from dspex.runtime import _pickling
from dspex.runtime._slot import CallJob

__all__ = ["PoolCalls", "ProgressCallback", "pickle_call"]

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called by ``map`` as results arrive."""

_Pool = TypeVar("_Pool", bound="PoolCalls")


class PoolCalls:
    """The caller-side verbs of a worker pool (see the module docstring)."""

    _call_ids: itertools.count[int]

    def _enqueue(self, job: CallJob) -> None:
        """Queue ``job`` for a worker (raise if the pool cannot take calls)."""
        raise NotImplementedError

    def close(self, *, grace: float = 5.0) -> None:
        """Stop the workers (running calls get ``grace`` seconds)."""
        raise NotImplementedError

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

    def __enter__(self: _Pool) -> _Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _submit(self, payload: Any, timeout: float | None, label: str) -> Future[Any]:
        if timeout is not None and not timeout > 0:
            raise WorkerError(f"timeout must be a positive number of seconds, got {timeout!r}")
        call_id = next(self._call_ids)
        job = CallJob(call_id, pickle_call(call_id, payload, label), Future(), timeout)
        self._enqueue(job)
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
    listed = list(payloads)  # the caller's iterator runs now, with the collector on
    try:
        with collection_deferred():
            for index, payload in enumerate(listed):
                futures.append(submit(payload, f"payloads[{index}]"))
        await_all(futures, progress, return_exceptions)
        return [outcome(future) for future in futures]
    finally:
        for future in futures:
            future.cancel()


class _CollectorHold:
    """Holds CPython's cyclic garbage collector while any ``map`` hands out its calls.

    A collection falls due every so many allocations, and a full one stops every thread of
    this process for as long as it scans the heap (about 20 ms for a modest one here). Due in
    the middle of a burst of sends, it delays the calls not yet sent, so the last workers of a
    hundred start that much later; held, it runs right after the burst, while the workers
    compute. The burst is a pickle and a pipe write per call (the payloads are listed before
    it, so no caller code runs while the collector is held). Bursts of several threads share
    one hold, and the collector is left as the first found it: one the program disabled stays
    disabled.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if not self._holders:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if not self._holders and self._was_enabled:
                    gc.enable()


collection_deferred = _CollectorHold()


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
