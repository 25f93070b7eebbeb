"""Baseline for the fleet figure of ``dspex bench remote``: the same rounds over bare pipes.

:class:`BareFleet` spawns processes with no dspex in them, each blocked on its end of a
``multiprocessing`` pipe. A round pickles one message per worker and writes it; each worker
notes the moment it unpickled its message, stays busy for the round's linger like the fleet's
calls do, and answers. That moment minus the round's start is the floor of reaching every worker
of a fleet on this machine (one process wake-up and one pipe write per worker), measured in the
same run as the fleet figure, so a slow machine shows in both.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from multiprocessing.connection import Connection
from types import TracebackType

__all__ = ["BareFleet"]


def bare_worker(conn: Connection) -> None:
    """Answer each ``(index, linger)`` with the monotonic ns it was read at; b"" stops."""
    while True:
        message = conn.recv_bytes()
        if not message:
            return
        index, linger = pickle.loads(message)
        read_at = time.monotonic_ns()
        time.sleep(linger)
        conn.send_bytes(pickle.dumps((index, read_at)))


class BareFleet:
    """``workers`` spawned bare processes, each reached through its own pipe.

    Use as a context manager; leaving it stops and joins every process.
    """

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        try:
            for index in range(workers):
                parent, child = context.Pipe(duplex=True)
                process = context.Process(
                    target=bare_worker, args=(child,), name=f"bare-fleet-{index}", daemon=True
                )
                process.start()
                child.close()
                self._conns.append(parent)
                self._processes.append(process)
        except BaseException:
            self.close()
            raise

    def round(self, linger: float) -> list[float]:
        """Message every worker once; return each one's ms from the round's start to its read."""
        start = time.monotonic_ns()
        for index, conn in enumerate(self._conns):
            conn.send_bytes(pickle.dumps((index, linger)))
        reads = [pickle.loads(conn.recv_bytes())[1] for conn in self._conns]
        return [(read_at - start) / 1e6 for read_at in reads]

    def close(self) -> None:
        """Stop every worker and wait for it to exit."""
        for conn in self._conns:
            try:
                conn.send_bytes(b"")
            except OSError:
                pass
            conn.close()
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
        self._conns, self._processes = [], []

    def __enter__(self) -> BareFleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
