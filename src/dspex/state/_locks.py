"""Layer 2: optimization locks of one session (pure data structure; the caller holds the lock).

One optimizer at a time may write a locked variable. A lock has an ``owner`` (an opaque token
naming the holder's connection or context), a human ``optimizer_id``, a lease that must be
renewed, and optional progress (iteration, best score, best value) that watchers can follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import dspex.errors as errors

__all__ = ["POLICIES", "LockState", "LockTable"]

POLICIES = ("fail", "wait", "preempt")
"""What ``acquire`` does when another optimizer holds the lock."""


@dataclass(frozen=True)
class LockState:
    """Who holds a variable's optimization lock, until when, and how far it got."""

    optimizer_id: str
    owner: str
    acquired_at: float
    expires_at: float
    lease: float
    progress: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The lock as shown in records and watch updates (the owner token stays private)."""
        return {
            "optimizer_id": self.optimizer_id,
            "acquired_at": self.acquired_at,
            "expires_at": self.expires_at,
            "progress": dict(self.progress),
        }


def _locked(name: str, held: LockState, action: str) -> errors.LockedError:
    return errors.LockedError(
        f"variable {name!r} is locked by optimizer {held.optimizer_id!r} "
        f"(lease until {held.expires_at:.3f}); cannot {action}. Wait for it, or acquire with "
        "policy='wait' or 'preempt'",
        name=name,
        holder=held.optimizer_id,
    )


class LockTable:
    """The optimization locks of one session; expiry is applied lazily with ``now``."""

    def __init__(self) -> None:
        self._locks: dict[str, LockState] = {}

    def holder(self, name: str, now: float) -> LockState | None:
        """The live lock on ``name``, or None (an expired lock counts as released)."""
        held = self._locks.get(name)
        if held is not None and held.expires_at <= now:
            del self._locks[name]
            return None
        return held

    def acquire(
        self,
        name: str,
        *,
        owner: str,
        optimizer_id: str,
        lease: float,
        now: float,
        preempt: bool = False,
    ) -> LockState:
        """Take (or renew, for the same owner) the lock on ``name``.

        Raises:
            LockedError: another owner holds it and ``preempt`` is false.
        """
        if lease <= 0:
            raise errors.VariableValueError(f"lock lease must be positive, got {lease!r}")
        held = self.holder(name, now)
        if held is not None and held.owner != owner and not preempt:
            raise _locked(name, held, "acquire it")
        progress = held.progress if held is not None and held.owner == owner else {}
        state = LockState(optimizer_id, owner, now, now + lease, lease, progress)
        self._locks[name] = state
        return state

    def check_write(self, name: str, owner: str | None, now: float) -> None:
        """Raise LockedError unless ``name`` is unlocked or held by ``owner``."""
        held = self.holder(name, now)
        if held is not None and held.owner != owner:
            raise _locked(name, held, "write it")

    def release(self, name: str, owner: str, now: float) -> bool:
        """Release the lock; True if it was held by ``owner``, False if already gone.

        Raises:
            LockedError: another owner holds it (only the owner may release).
        """
        held = self.holder(name, now)
        if held is None:
            return False
        if held.owner != owner:
            raise _locked(name, held, "release it (only its holder may)")
        del self._locks[name]
        return True

    def renew(self, name: str, owner: str, now: float) -> LockState:
        """Extend the lease by its length from ``now``.

        Raises:
            LockedError: the lock is gone or held by someone else.
        """
        held = self._owned(name, owner, now)
        state = replace(held, expires_at=now + held.lease)
        self._locks[name] = state
        return state

    def report(self, name: str, owner: str, progress: dict[str, Any], now: float) -> LockState:
        """Merge ``progress`` into the lock's published progress."""
        held = self._owned(name, owner, now)
        state = replace(held, progress={**held.progress, **progress})
        self._locks[name] = state
        return state

    def expired(self, now: float) -> list[str]:
        """Drop and return the names whose lease ran out."""
        gone = [name for name, held in self._locks.items() if held.expires_at <= now]
        for name in gone:
            del self._locks[name]
        return gone

    def release_owner(self, owner: str) -> list[str]:
        """Drop every lock of ``owner`` (its connection or process died); returns the names."""
        gone = [name for name, held in self._locks.items() if held.owner == owner]
        for name in gone:
            del self._locks[name]
        return gone

    def _owned(self, name: str, owner: str, now: float) -> LockState:
        held = self.holder(name, now)
        if held is None:
            raise errors.LockedError(
                f"variable {name!r} is not locked (the lease may have expired); acquire it again",
                name=name,
            )
        if held.owner != owner:
            raise _locked(name, held, "renew or report on it")
        return held
