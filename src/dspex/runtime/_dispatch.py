"""Layer 1 runtime: the pool's state machine and its dispatcher loop.

:class:`DispatchCore` holds the worker seats, the call queue and the lifecycle flags behind one
lock. Caller threads queue calls and hand them to idle workers directly (:meth:`submit`). The
dispatcher thread (:meth:`run`) waits on every worker pipe, every process sentinel and a wake-up
pipe, and in each round: reads replies, handles exits, enforces setup and call deadlines,
starts replacement workers, and hands queued calls to idle workers. Futures are resolved after
the lock is released, so their callbacks may call back into the pool.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from multiprocessing.connection import wait
from multiprocessing.context import SpawnContext
from typing import Any

from dspex.errors import WorkerError, WorkerSetupError, WorkerTimeoutError
from dspex.runtime import _worker
from dspex.runtime._bootstrap import NEVER_STARTED
from dspex.runtime._outcome import (
    crashed_error,
    describe_exit,
    rebuild_exception,
    timeout_error,
)
from dspex.runtime._pickling import loads
from dspex.runtime._slot import CallJob, ExitingProcess, SlotState, WorkerSlot

Settled = list[tuple[Future[Any], bool, Any]]
"""Futures to resolve once the lock is released: ``(future, ok, result_or_exception)``."""

_EXIT_GRACE = 2.0  # seconds between terminate/kill escalation steps
_RESTART_DELAY = 0.2  # seconds before retrying a worker that could not even be spawned


class DispatchCore:
    """The pool's shared state and the dispatcher loop (see the module docstring)."""

    def __init__(
        self,
        context: SpawnContext,
        setup_blob: bytes,
        *,
        workers: int,
        retries: int,
        setup_timeout: float | None,
        setup_attempts: int,
        name: str,
    ) -> None:
        self._context = context
        self._setup_blob = setup_blob
        self._retries = retries
        self._setup_timeout = setup_timeout
        self._setup_attempts = setup_attempts
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._slots = [WorkerSlot(index, name) for index in range(workers)]
        self._exiting: list[ExitingProcess] = []
        self._queue: deque[CallJob] = deque()
        self._wake_r, self._wake_w = context.Pipe(duplex=False)
        self._wake_pending = False
        self._wait_until = 0.0  # when the dispatcher's current wait times out (monotonic)
        self._closing = False
        self._close_at: float | None = None
        self._broken: WorkerError | None = None
        self._setup_failures = 0
        self._finished = False

    @property
    def size(self) -> int:
        """The number of worker seats."""
        return len(self._slots)

    # ---- caller-side API (any thread) -------------------------------------------------------

    def start_workers(self) -> None:
        """Spawn every worker once (before the dispatcher thread starts)."""
        settled: Settled = []
        with self._lock:
            self._refill_locked(settled)
        _settle(settled)

    def submit(self, job: CallJob) -> None:
        """Queue ``job`` and hand it to an idle worker if there is one."""
        with self._lock:
            self._check_usable_locked()
            self._queue.append(job)
            deadline = self._dispatch_locked()
            if deadline is not None and deadline < self._wait_until:
                self._wake_locked()  # the dispatcher must watch an earlier deadline

    def wait_ready(
        self, timeout: float | None, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Block until every seat is idle or busy; raise if broken, closed or timed out.

        ``progress(ready, total)`` is called (without the lock held) first and each time the
        number of started workers changes.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        total, reported = len(self._slots), -1
        while True:
            ready = self._await_ready_count(reported, deadline, timeout)
            if progress is not None:
                progress(ready, total)
            if ready == total:
                return
            reported = ready

    def _await_ready_count(
        self, reported: int, deadline: float | None, timeout: float | None
    ) -> int:
        """Wait until the number of ready seats differs from ``reported``, and return it."""
        with self._changed:
            while True:
                self._check_usable_locked()
                ready = sum(slot.state in ("idle", "busy") for slot in self._slots)
                if ready != reported:
                    return ready
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    states = ", ".join(slot.state for slot in self._slots)
                    raise WorkerTimeoutError(
                        f"the workers were not ready within {timeout}s (states: {states})"
                    )
                self._changed.wait(remaining)

    def snapshot(self) -> list[tuple[int, int | None, SlotState, bool, int]]:
        """Return ``(index, pid, state, alive, starts)`` for every seat."""
        with self._lock:
            return [
                (slot.index, slot.pid, slot.state, slot.is_alive(), slot.starts)
                for slot in self._slots
            ]

    def close(self, grace: float) -> None:
        """Begin shutdown: fail queued calls, ask workers to stop; the loop does the rest."""
        settled: Settled = []
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._close_at = time.monotonic() + grace
            self._fail_queue_locked(
                WorkerError, "the worker pool was closed before this call started", settled
            )
            for slot in self._slots:
                if slot.state == "starting":
                    self._exiting.append(slot.detach("terminate", _EXIT_GRACE))
                else:
                    slot.send_stop()
            self._wake_locked()
            self._changed.notify_all()
        _settle(settled)

    # ---- the dispatcher thread ----------------------------------------------------------------

    def run(self) -> None:
        """Dispatcher loop: runs until the pool is closed and every process is reaped."""
        try:
            while self._round():
                pass
        except BaseException as exc:  # never leave callers hanging on a dead dispatcher
            self._abort(exc)
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _round(self) -> bool:
        with self._lock:
            if self._closing and not self._exiting and all(s.process is None for s in self._slots):
                self._finished = True
                self._changed.notify_all()
                return False
            now = time.monotonic()
            waitables, timeout = self._plan_locked(now)
            self._wait_until = float("inf") if timeout is None else now + timeout
        ready = set(wait(waitables, timeout))
        settled: Settled = []
        with self._lock:
            self._handle_ready_locked(ready, settled)
            self._expire_locked(time.monotonic(), settled)
            self._refill_locked(settled)
            self._dispatch_locked()
            self._changed.notify_all()
        _settle(settled)
        return True

    def _plan_locked(self, now: float) -> tuple[list[Any], float | None]:
        waitables: list[Any] = [self._wake_r]
        deadlines: list[float] = []
        for slot in self._slots:
            if slot.process is not None and slot.conn is not None:
                waitables += [slot.conn, slot.process.sentinel]
            elif not self._closing and self._broken is None:
                deadlines.append(now + _RESTART_DELAY)  # a seat that failed to spawn
            if slot.deadline is not None:
                deadlines.append(slot.deadline)
        for exiting in self._exiting:
            waitables.append(exiting.process.sentinel)
            if exiting.kill_at is not None:
                deadlines.append(exiting.kill_at)
        if self._close_at is not None:
            deadlines.append(self._close_at)
        return waitables, (max(0.0, min(deadlines) - now) if deadlines else None)

    def _handle_ready_locked(self, ready: set[Any], settled: Settled) -> None:
        if self._wake_r in ready:
            while self._wake_r.poll():
                self._wake_r.recv_bytes()
            self._wake_pending = False
        for slot in self._slots:
            if slot.conn is not None and slot.conn in ready:
                self._read_locked(slot, settled)
        for slot in self._slots:
            if slot.process is not None and slot.process.sentinel in ready:
                self._on_exit_locked(slot, settled)
        for exiting in [e for e in self._exiting if e.process.sentinel in ready]:
            self._exiting.remove(exiting)
            exiting.reap()

    # ---- replies ------------------------------------------------------------------------------

    def _read_locked(self, slot: WorkerSlot, settled: Settled) -> None:
        assert slot.conn is not None
        try:
            data = slot.conn.recv_bytes()
        except (EOFError, OSError):  # the worker closed its end: it is exiting
            self._on_exit_locked(slot, settled)
            return
        self._on_message_locked(slot, data, settled)

    def _on_message_locked(self, slot: WorkerSlot, data: bytes, settled: Settled) -> None:
        try:
            message = loads(data)
        except Exception as exc:
            job = slot.finish()
            if job is not None:
                error = WorkerError(
                    f"the result of a call on worker pid {slot.pid} cannot be unpickled in the "
                    f"parent: {type(exc).__name__}: {exc}. Return types the parent can import."
                )
                settled.append((job.future, False, error))
            return
        tag = message[0]
        if tag == _worker.STARTED:
            slot.started = True
        elif tag == _worker.READY:
            slot.state, slot.deadline = "idle", None
            self._setup_failures = 0
        elif tag == _worker.SETUP_FAILED:
            pid = slot.pid
            self._exiting.append(slot.detach("none", _EXIT_GRACE))
            self._setup_failed_locked(f"setup raised in worker pid {pid}:\n{message[1]}", settled)
        else:
            self._on_reply_locked(slot, message, settled)

    def _on_reply_locked(
        self, slot: WorkerSlot, message: tuple[Any, ...], settled: Settled
    ) -> None:
        job = slot.finish()
        if job is None:
            return
        if message[0] == _worker.RESULT:
            settled.append((job.future, True, message[2]))
        else:
            _, _, blob, text, summary = message
            settled.append(
                (job.future, False, rebuild_exception(blob, text, summary, slot.pid or 0))
            )

    # ---- process exits, deadlines and restarts ------------------------------------------------

    def _on_exit_locked(self, slot: WorkerSlot, settled: Settled) -> None:
        process = slot.process
        assert process is not None and slot.conn is not None
        while slot.process is process and slot.conn.poll():  # replies sent before the exit
            try:
                data = slot.conn.recv_bytes()
            except (EOFError, OSError):
                break
            self._on_message_locked(slot, data, settled)
        if slot.process is not process:  # a reply already retired this process
            return
        process.join(_EXIT_GRACE)
        if process.exitcode is None:  # closed its pipe but did not exit: stop it for good
            process.kill()
            process.join()
        state, job, pid, exitcode = slot.state, slot.job, slot.pid, process.exitcode
        started = slot.started
        slot.detach("none", 0.0).reap()
        how = describe_exit(exitcode)
        if state == "starting":
            where = "during setup" if started else NEVER_STARTED
            self._setup_failed_locked(f"worker pid {pid} {how} {where}", settled)
        elif job is not None:
            self._crashed_locked(job, slot.index, pid, exitcode, settled)

    def _crashed_locked(
        self, job: CallJob, index: int, pid: int | None, exitcode: int | None, settled: Settled
    ) -> None:
        job.crashes += 1
        if job.crashes <= self._retries and not self._closing and self._broken is None:
            self._queue.appendleft(job)
            return
        error = crashed_error(index, pid, exitcode, job.crashes, self._retries)
        settled.append((job.future, False, error))

    def _setup_failed_locked(self, detail: str, settled: Settled) -> None:
        self._setup_failures += 1
        if self._setup_failures < self._setup_attempts or self._broken is not None:
            return
        self._broken = WorkerSetupError(
            f"worker setup failed {self._setup_failures} times in a row, so the pool cannot run "
            f"calls; fix the setup target and create a new pool. Last failure: {detail}",
            failures=self._setup_failures,
        )
        self._fail_queue_locked(WorkerSetupError, self._broken.message, settled)
        for slot in self._slots:
            if slot.state == "starting":
                self._exiting.append(slot.detach("kill", _EXIT_GRACE))

    def _expire_locked(self, now: float, settled: Settled) -> None:
        for slot in self._slots:
            if slot.deadline is None or slot.deadline > now:
                continue
            pid, job = slot.pid, slot.job
            self._exiting.append(slot.detach("kill", _EXIT_GRACE))
            if job is None:
                detail = f"worker pid {pid} did not finish setup within {self._setup_timeout}s"
                self._setup_failed_locked(detail, settled)
            else:
                error = timeout_error(slot.index, pid, job.timeout)
                settled.append((job.future, False, error))
        for exiting in self._exiting:
            if exiting.kill_at is not None and exiting.kill_at <= now:
                exiting.process.kill()
                exiting.kill_at = None
        if self._close_at is not None and self._close_at <= now:
            self._close_at = None
            self._stop_running_locked(settled)

    def _stop_running_locked(self, settled: Settled) -> None:
        """Grace period over: terminate what still runs and fail its calls."""
        for slot in self._slots:
            if slot.process is None:
                continue
            job = slot.job
            self._exiting.append(slot.detach("terminate", _EXIT_GRACE))
            if job is not None:
                error = WorkerError("the worker pool was closed before this call finished")
                settled.append((job.future, False, error))

    def _refill_locked(self, settled: Settled) -> None:
        if self._closing or self._broken is not None:
            return
        for slot in self._slots:
            if slot.process is not None:
                continue
            try:
                slot.start(self._context, self._setup_blob, self._setup_timeout)
            except Exception:
                detail = f"worker {slot.index} could not be spawned:\n{traceback.format_exc()}"
                self._setup_failed_locked(detail, settled)
                if self._broken is not None:
                    return

    # ---- dispatch -----------------------------------------------------------------------------

    def _dispatch_locked(self) -> float | None:
        """Hand queued calls to idle workers; return the earliest call deadline this set.

        The caller wakes the dispatcher only when that deadline comes before the one its
        current wait ends at: a burst of calls (a ``map`` over a hundred workers) then costs one
        pipe write per call, not also a dispatcher round that contends for the lock and the GIL.
        """
        earliest: float | None = None
        while self._queue:
            slot = next((s for s in self._slots if s.state == "idle"), None)
            if slot is None:
                break
            job = self._queue.popleft()
            if not job.running:
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued
                job.running = True
            if not slot.assign(job):  # the worker is dying; its exit will be handled
                self._queue.appendleft(job)
                slot.state = "busy"
                continue
            if slot.deadline is not None and (earliest is None or slot.deadline < earliest):
                earliest = slot.deadline
        return earliest

    def _wake_locked(self) -> None:
        if not self._wake_pending and not self._finished:
            self._wake_pending = True
            self._wake_w.send_bytes(b"!")

    def _check_usable_locked(self) -> None:
        if self._broken is not None:
            raise type(self._broken)(self._broken.message, **self._broken.details)
        if self._closing:
            raise WorkerError("the worker pool is closed; create a new WorkerPool to run calls")

    def _fail_queue_locked(self, kind: type[WorkerError], message: str, settled: Settled) -> None:
        while self._queue:
            settled.append((self._queue.popleft().future, False, kind(message)))

    def _abort(self, exc: BaseException) -> None:
        """The dispatcher itself failed: fail every call, kill every worker, report why."""
        settled: Settled = []
        with self._lock:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._broken = WorkerError(f"the worker pool dispatcher failed:\n{text}")
            self._fail_queue_locked(WorkerError, self._broken.message, settled)
            for slot in self._slots:
                if slot.process is not None:
                    job = slot.job
                    self._exiting.append(slot.detach("kill", 0.0))
                    if job is not None:
                        settled.append((job.future, False, WorkerError(self._broken.message)))
            for exiting in self._exiting:
                exiting.process.kill()
                exiting.reap()
            self._exiting.clear()
            self._closing = self._finished = True
            self._changed.notify_all()
        _settle(settled)


def _settle(settled: Settled) -> None:
    for future, ok, value in settled:
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except InvalidStateError:  # cancelled by its caller meanwhile
            pass
