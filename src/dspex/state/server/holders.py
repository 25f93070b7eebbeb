"""Server side: which optimization locks each client connection holds.

A client that takes locks keeps one ``HoldLocks`` server stream open. The stream gets a random
holder id, the client sends it with each ``AcquireLock``, and the server remembers the lock
under it. When the stream ends (the client closed, its process died, its connection broke),
the server releases every lock still remembered under the id, at once rather than at lease
expiry. A lock released, preempted or expired meanwhile is simply not released again.
"""

from __future__ import annotations

import secrets
import threading

__all__ = ["HeldLock", "LockHolders"]

HeldLock = tuple[str, str, str]
"""(session_id, name, owner token) of one held lock."""


class LockHolders:
    """Thread-safe registry: holder id -> the locks acquired under it."""

    def __init__(self) -> None:
        self._held: dict[str, set[HeldLock]] = {}
        self._holder_of: dict[HeldLock, str] = {}
        self._lock = threading.Lock()

    def open(self) -> str:
        """Register a new holder (a HoldLocks stream started) and return its id."""
        holder_id = secrets.token_hex(16)
        with self._lock:
            self._held[holder_id] = set()
        return holder_id

    def is_open(self, holder_id: str) -> bool:
        """True while the holder's stream is open."""
        with self._lock:
            return holder_id in self._held

    def attach(self, holder_id: str, lock: HeldLock) -> bool:
        """Remember ``lock`` under ``holder_id``; False if that stream already ended."""
        with self._lock:
            held = self._held.get(holder_id)
            if held is None:
                return False
            previous = self._holder_of.get(lock)
            if previous is not None and previous != holder_id:
                self._held.get(previous, set()).discard(lock)
            held.add(lock)
            self._holder_of[lock] = holder_id
            return True

    def detach(self, lock: HeldLock) -> None:
        """Forget ``lock`` (it was released by its owner)."""
        with self._lock:
            holder_id = self._holder_of.pop(lock, None)
            if holder_id is not None:
                self._held.get(holder_id, set()).discard(lock)

    def close(self, holder_id: str) -> list[HeldLock]:
        """End a holder (its stream ended) and return the locks to release."""
        with self._lock:
            held = self._held.pop(holder_id, set())
            for lock in held:
                if self._holder_of.get(lock) == holder_id:
                    del self._holder_of[lock]
            return sorted(held)

    @property
    def count(self) -> int:
        """Number of open holder streams."""
        with self._lock:
            return len(self._held)

    @property
    def held_count(self) -> int:
        """Number of locks remembered under open holders."""
        with self._lock:
            return len(self._holder_of)
