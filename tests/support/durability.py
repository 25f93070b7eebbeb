"""Load for the durability tests: writers, a resuming watcher and a cache reader, each a thread
with its own store client, that keep going while the server is killed and restarted.

A write counts as acknowledged only when the call returned its record; a call that failed
(the server died under it) may or may not have been applied, and is never checked.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dspex._model import VariableRecord, VariableUpdate
from dspex.errors import DspexError, StoreError
from dspex.state import SessionContext
from dspex.state.store import SessionStoreProvider

WAIT = 30.0
"""Upper bound for anything that should happen "soon" (the machine may be loaded)."""

RETRY = 0.01
"""Pause after a call that failed because the server is down."""


class LoadThread(threading.Thread):
    """A daemon thread with a stop flag that keeps the first unexpected error."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.unavailable = 0  # calls that failed because the server was down or died

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def work(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Stop the thread and re-raise what went wrong in it."""
        self.halt.set()
        self.join(WAIT)
        assert not self.is_alive(), f"{self.name} did not stop"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error


class Writer(LoadThread):
    """Writes 1, 2, 3, ... to ``names`` (one set each, or one atomic batch for all of them).

    ``acked`` holds the record of every acknowledged write, in the order acknowledged.
    """

    def __init__(self, address: str, session_id: str, names: list[str], *, batch: bool) -> None:
        super().__init__(f"writer-{'+'.join(names)}")
        self.client = SessionStoreProvider(address, timeout=5.0)
        self.session_id = session_id
        self.names = names
        self.batch = batch
        self.acked: list[VariableRecord] = []

    def work(self) -> None:
        value = 0
        try:
            while not self.halt.is_set():
                value += 1  # a new value per attempt: each acked value names one write
                try:
                    self.acked.extend(self._write(value))
                except StoreError:  # the server died under the call: not acknowledged
                    self.unavailable += 1
                    time.sleep(RETRY)
        finally:
            self.client.close()

    def _write(self, value: int) -> list[VariableRecord]:
        if not self.batch:
            return [self.client.set_variable(self.session_id, self.names[0], value)]
        results = self.client.update_variables(
            self.session_id, dict.fromkeys(self.names, value), atomic=True
        )
        failed = [r for r in results.values() if isinstance(r, DspexError)]
        if failed:
            raise AssertionError(f"atomic batch refused: {failed}")
        return sorted(results.values(), key=lambda r: r.revision)  # type: ignore[union-attr]


class Follower(LoadThread):
    """Watches every variable of the session from revision 0; after the stream is lost it
    watches again from the last revision it received (with retries while the server is down).

    ``received`` holds every update in arrival order; ``resumes`` the (resume_from the error
    named, last revision received) of each lost stream.
    """

    def __init__(self, address: str, session_id: str) -> None:
        super().__init__("follower")
        self.client = SessionStoreProvider(address, timeout=5.0)
        self.session_id = session_id
        self.received: list[VariableUpdate] = []
        self.resumes: list[tuple[Any, int]] = []

    @property
    def last(self) -> int:
        return self.received[-1].revision if self.received else 0

    def work(self) -> None:
        try:
            while not self.halt.is_set():
                try:
                    watch = self.client.watch_variables(self.session_id, after_revision=self.last)
                except StoreError:
                    self.unavailable += 1
                    time.sleep(RETRY)
                    continue
                self._follow(watch)
        finally:
            self.client.close()

    def _follow(self, watch: Any) -> None:
        try:
            while not self.halt.is_set():
                update = watch.poll(0.1)
                if update is not None:
                    self.received.append(update)
                elif watch.closed:
                    raise AssertionError("the watch ended normally: the session was closed")
        except StoreError as exc:  # the stream was lost with the server
            self.resumes.append((exc.details.get("resume_from"), self.last))
        finally:
            watch.cancel()


class CacheReader(LoadThread):
    """Reads ``name`` through ``SessionContext.connect`` (the watch-coherent cache) in a loop.

    ``backwards`` counts reads that returned an older version than an earlier read: the cache
    must never go back in time across server deaths.
    """

    def __init__(self, address: str, session_id: str, name: str) -> None:
        super().__init__("cache-reader")
        self.context = SessionContext.connect(address, session_id)
        self.name = name
        self.reads = 0
        self.newest = 0
        self.backwards: list[tuple[int, int]] = []

    def work(self) -> None:
        try:
            while not self.halt.is_set():
                try:
                    record = self.context.variable(self.name)
                except StoreError:
                    self.unavailable += 1
                    time.sleep(RETRY)
                    continue
                self.reads += 1
                if record.version < self.newest:
                    self.backwards.append((self.newest, record.version))
                self.newest = max(self.newest, record.version)
                time.sleep(0.001)
        finally:
            self.context.provider.close()
