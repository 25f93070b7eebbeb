"""Core: the background sweeper that expires sessions past their TTL and lock leases.

It starts on demand (the first session with a TTL, the first lock) and stops with the provider.
Expiry is also applied lazily by every read of a lock, so the sweeper only makes it visible
(records and watch updates) and removes dead sessions' data.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from dspex.state.engines import Engine, UnknownSession

__all__ = ["Sweeper"]


class _Sweepable(Protocol):
    @property
    def engine(self) -> Engine: ...

    def expire_session(self, session_id: str) -> bool: ...

    def expire_lock(self, session_id: str, name: str) -> bool: ...


class Sweeper:
    """Periodically expires sessions and lock leases of one provider."""

    def __init__(self, provider: _Sweepable, interval: float) -> None:
        self._provider = provider
        self._interval = interval
        self._locks: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def ensure_running(self) -> None:
        """Start the sweeper thread if it is not running."""
        with self._guard:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="dspex-sweeper", daemon=True
                )
                self._thread.start()

    def watch_lock(self, session_id: str, name: str) -> None:
        """Check this lock's lease on every sweep until it is released or expired."""
        self._locks.add((session_id, name))
        self.ensure_running()

    def sweep(self, now: float) -> None:
        """One pass: expire sessions without heartbeat for their TTL, then dead leases."""
        sessions = self._provider.engine.sessions()
        for meta in sessions:
            if meta.ttl is not None and now - meta.last_heartbeat > meta.ttl:
                self._provider.expire_session(meta.session_id)
        for session_id, name in list(self._locks):
            if self._provider.expire_lock(session_id, name) or not self._held(session_id, name):
                self._locks.discard((session_id, name))

    def stop(self) -> None:
        """Stop the thread (idempotent)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _held(self, session_id: str, name: str) -> bool:
        try:
            record = self._provider.engine.get(session_id, name)
        except UnknownSession:  # session gone: nothing left to sweep
            return False
        return record is not None and record.lock is not None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sweep(time.time())
