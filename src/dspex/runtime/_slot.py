"""Layer 1 runtime: one worker seat of the pool, and the calls that occupy it.

A :class:`WorkerSlot` owns at most one live worker process and its pipe. When its process dies
or is killed, the process is handed to the pool's reaper list (:class:`ExitingProcess`) and the
slot can start a replacement at once. Every method is called with the pool lock held.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Literal

from dspex.runtime import _worker

SlotState = Literal["starting", "idle", "busy", "stopped"]


@dataclass(eq=False)
class CallJob:
    """A submitted call: its pickled message, its future and its retry bookkeeping."""

    call_id: int
    data: bytes
    future: Future[Any]
    timeout: float | None
    crashes: int = 0
    running: bool = False


@dataclass(eq=False)
class ExitingProcess:
    """A worker process that was stopped or killed and still has to be reaped."""

    process: SpawnProcess
    kill_at: float | None

    def reap(self) -> None:
        """Collect the exit status and free the process handle (the process has exited)."""
        self.process.join()
        self.process.close()


@dataclass(eq=False)
class WorkerSlot:
    """One seat of the pool: a worker process, its pipe, its state and its current call."""

    index: int
    name: str
    state: SlotState = "stopped"
    process: SpawnProcess | None = None
    conn: Connection | None = None
    job: CallJob | None = None
    deadline: float | None = None
    starts: int = 0
    pid: int | None = field(default=None)
    started: bool = False
    """Whether the current process's entry point has run (it said ``STARTED``)."""

    def start(self, context: SpawnContext, setup_blob: bytes, setup_timeout: float | None) -> None:
        """Spawn a fresh worker that will run setup; the slot is ``starting`` until READY."""
        parent_conn, child_conn = context.Pipe(duplex=True)
        process = context.Process(
            target=_worker.main,
            args=(child_conn, setup_blob),
            name=f"{self.name}-{self.index}",
        )
        try:
            process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        self.process, self.conn, self.pid = process, parent_conn, process.pid
        self.state, self.job, self.starts = "starting", None, self.starts + 1
        self.started = False
        self.deadline = None if setup_timeout is None else time.monotonic() + setup_timeout

    def assign(self, job: CallJob) -> bool:
        """Send ``job`` to this idle worker; False if the pipe is already broken."""
        assert self.conn is not None
        try:
            self.conn.send_bytes(job.data)
        except OSError:
            return False
        self.state, self.job = "busy", job
        self.deadline = None if job.timeout is None else time.monotonic() + job.timeout
        return True

    def finish(self) -> CallJob | None:
        """Mark the current call as answered and return it; the worker is idle again."""
        job, self.job = self.job, None
        self.state, self.deadline = "idle", None
        return job

    def send_stop(self) -> None:
        """Ask the worker to exit after its current call (if any)."""
        if self.conn is None:
            return
        try:
            self.conn.send_bytes(_worker.STOP)
        except OSError:
            pass

    def detach(self, signal: Literal["none", "terminate", "kill"], grace: float) -> ExitingProcess:
        """Release the process (signalled as asked) for reaping; the slot becomes ``stopped``."""
        process = self.process
        assert process is not None
        if signal == "terminate":
            process.terminate()
        elif signal == "kill":
            process.kill()
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn, self.job, self.pid = None, None, None, None
        self.state, self.deadline = "stopped", None
        return ExitingProcess(process, time.monotonic() + grace)

    def is_alive(self) -> bool:
        """True while the slot's process runs (for status reports)."""
        return self.process is not None and self.process.is_alive()
