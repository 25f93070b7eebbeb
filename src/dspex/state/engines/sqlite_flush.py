"""Group flush: with ``fsync``, one disk flush of the write-ahead log for every commit made
before it started, taken outside the data file's lock.

SQLite runs with ``synchronous=NORMAL``: ``COMMIT`` appends the transaction to the WAL with
``write(2)`` and returns without flushing (SQLite still flushes the WAL and the data file
around each checkpoint, so the file is never corrupted). An engine with ``fsync`` then calls
:meth:`WalFlush.flush` before it acknowledges a change: ``fdatasync`` of the WAL file makes
every commit written before the call durable, exactly what ``synchronous=FULL`` would have
flushed inside ``COMMIT``. Because the flush runs after the data file's lock is released, the
next writers commit while it runs, and one flush covers all of them (group commit): the number
of flushes per acknowledged change falls below one as writers grow, while the WAL write of
each batch stays off the flush's critical path.

A flush that fails (``EIO``) leaves the outcome of the commits it covered unknown: they are in
the WAL but may not survive a power loss. The flush then stays failed: this and every later
write is refused until the server restarts (the data file is the truth at the next start), so a
revision is never acknowledged twice.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import dspex.errors as errors

__all__ = ["WalFlush", "sync_directory"]


class WalFlush:
    """Flushes of the WAL file ``path``, each covering every commit made before it started.

    Args:
        path: the WAL file (``dspex.sqlite3-wal``), which SQLite created and keeps while its
            connection is open.
        flushes: flushes counted before this process (the data file's running count).
        sealed: called after each flush with the change count it made durable (the seal).
        gather: called before each flush to commit the changes already queued for the data
            file, if it is free, so this flush covers them instead of the next one.

    Raises:
        StoreDataError: the WAL file cannot be opened.
    """

    def __init__(
        self,
        path: Path,
        flushes: int,
        sealed: Callable[[int], None],
        gather: Callable[[], None],
    ) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise errors.StoreDataError(
                f"cannot open the write-ahead log {path} to flush it: {exc.strerror or exc}; "
                "check the data directory's permissions",
                directory=str(path.parent),
            ) from exc
        self._cond = threading.Condition()  # guards everything below but _newest
        self._sealed = sealed
        self._gather = gather
        # (mark, change count) of the newest COMMIT that returned: one tuple, read atomically.
        self._newest = (0, 0)
        self._running = False  # a flush is in flight (one at a time: each covers the most)
        self.flushed = 0  # commit mark up to which the WAL is on the disk
        self.flushes = flushes
        self.failure: errors.StoreError | None = None

    def committed(self, changes: int) -> int:
        """Count one COMMIT that returned, after which the file holds ``changes``; returns the
        commit's mark for :meth:`flush` (call under the data file's lock)."""
        mark = self._newest[0] + 1
        self._newest = (mark, changes)
        return mark

    def flush(self, mark: int) -> None:
        """Return once the commit ``mark`` is on the disk: at once if a flush covered it, else
        after the flush in flight (which may cover it) and, if needed, a flush of its own.

        Raises:
            StoreError: the flush failed (``outcome_unknown``); every later write fails.
            StoreDataError: the file was closed before the commit was flushed.
        """
        if self.flushed >= mark:
            return
        with self._cond:
            if not self._take_turn(mark):
                return
        done = False
        try:
            self._gather()
            target, changes = self._newest  # every commit up to here is in the WAL file
            os.fdatasync(self._fd)
            done = True
        except OSError as exc:
            self.failure = self._failed(exc)
            raise self.failure from exc
        finally:
            with self._cond:  # waiters wake to find themselves covered, or take the next turn
                if done:
                    self.flushes += 1
                    self.flushed = target
                    self._sealed(changes)
                self._running = False
                self._cond.notify_all()

    def _take_turn(self, mark: int) -> bool:
        """Wait until ``mark`` is flushed (False) or no flush runs, so this thread flushes
        (True); the caller holds ``_cond``."""
        while True:
            if self.failure is not None:
                raise self.failure
            if self.flushed >= mark:
                return False
            if self._fd < 0:
                raise errors.StoreDataError(
                    f"the write-ahead log {self.path} was closed; reopen the store",
                    directory=str(self.path.parent),
                )
            if not self._running:
                self._running = True
                return True
            self._cond.wait()

    def _failed(self, exc: OSError) -> errors.StoreError:
        return errors.StoreError(
            f"flushing the write-ahead log {self.path} to disk failed ({exc}): the last "
            "changes may or may not survive a power loss, so this server takes no more "
            "writes; restart it (the data file is checked at start) and read the variables "
            "back before retrying",
            directory=str(self.path.parent),
            outcome_unknown=True,
        )

    def close(self) -> None:
        """Close the WAL file once the flushes in flight ended; a later :meth:`flush` of an
        unflushed commit is refused."""
        with self._cond:
            self._cond.wait_for(lambda: not self._running, timeout=30.0)
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def sync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (the data file, its WAL and the seal) to the disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
