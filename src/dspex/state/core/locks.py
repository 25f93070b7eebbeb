"""Core: optimization-lock rules, as pure functions over a record's ``lock`` mapping.

A lock lives on the variable's record (``record.lock``), so an engine's compare-and-set on the
record covers it, across servers too. One optimizer at a time may write a locked variable. A lock
names the ``optimizer_id`` (for people), an ``owner`` (the sha256 of a secret token only the
holder has), a lease that the holder renews, and published progress (iteration, best score,
best value) that watchers see. An expired lease counts as released.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import dspex.errors as errors
from dspex._model import freeze

__all__ = ["POLICIES", "acquire", "check_write", "holder", "owner_digest", "release", "renew"]

POLICIES = ("fail", "wait", "preempt")
"""What acquiring does when another optimizer holds the lock."""

Lock = Mapping[str, Any]


def owner_digest(token: str) -> str:
    """The digest stored in a lock for the holder's secret token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def holder(lock: Lock | None, now: float) -> Lock | None:
    """The live lock, or None when unlocked or the lease ran out."""
    if lock is None or lock["expires_at"] <= now:
        return None
    return lock


def _locked(name: str, held: Lock, action: str, now: float) -> errors.LockedError:
    remaining = max(0.0, held["expires_at"] - now)
    return errors.LockedError(
        f"variable {name!r} is locked by optimizer {held['optimizer_id']!r} "
        f"(lease ends in {remaining:.1f}s unless renewed); cannot {action}. Wait for it, or "
        "acquire with policy='wait' or 'preempt'",
        name=name,
        holder=held["optimizer_id"],
    )


def acquire(
    lock: Lock | None,
    name: str,
    *,
    owner: str,
    optimizer_id: str,
    lease: float,
    now: float,
    preempt: bool = False,
) -> Lock:
    """The lock after ``owner`` takes it (or renews it, keeping its progress).

    Raises:
        LockedError: another owner holds it and ``preempt`` is false.
        VariableValueError: the lease is not positive.
    """
    if not lease > 0:
        raise errors.VariableValueError(
            f"lock lease for {name!r} must be a positive number of seconds, got {lease!r}"
        )
    digest = owner_digest(owner)
    held = holder(lock, now)
    if held is not None and held["owner"] != digest and not preempt:
        raise _locked(name, held, "acquire it", now)
    mine = held is not None and held["owner"] == digest
    taken: Lock = freeze(
        {
            "optimizer_id": optimizer_id,
            "owner": digest,
            "acquired_at": held["acquired_at"] if mine and held else now,
            "expires_at": now + lease,
            "lease": lease,
            "progress": dict(held["progress"]) if mine and held else {},
        }
    )
    return taken


def check_write(lock: Lock | None, name: str, owner: str | None, now: float) -> None:
    """Raise LockedError unless ``name`` is unlocked or held by ``owner``."""
    held = holder(lock, now)
    if held is not None and (owner is None or held["owner"] != owner_digest(owner)):
        raise _locked(name, held, "write it", now)


def release(lock: Lock | None, name: str, owner: str, now: float) -> None:
    """Check that ``owner`` may release the lock (the new lock is None).

    Raises:
        LockedError: another owner holds it (only the holder may release).
    """
    held = holder(lock, now)
    if held is not None and held["owner"] != owner_digest(owner):
        raise _locked(name, held, "release it (only its holder may)", now)


def renew(
    lock: Lock | None, name: str, owner: str, now: float, progress: Mapping[str, Any] | None
) -> Lock:
    """The lock with its lease extended from ``now`` and ``progress`` merged in.

    Raises:
        LockedError: the lock is gone (lease expired) or held by someone else.
    """
    held = holder(lock, now)
    if held is None:
        raise errors.LockedError(
            f"variable {name!r} is not locked (the lease may have expired); acquire it again",
            name=name,
        )
    if held["owner"] != owner_digest(owner):
        raise _locked(name, held, "renew or report on it", now)
    merged = {**held["progress"], **(progress or {})}
    renewed: Lock = freeze({**held, "expires_at": now + held["lease"], "progress": merged})
    return renewed
