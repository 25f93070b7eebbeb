"""Core: optimization-lock rules, as pure functions over a record's ``lock`` mapping.

A lock lives on the variable's record (``record.lock``), so an engine's compare-and-set on the
record covers it, across servers too. One optimizer at a time may write a locked variable. A lock
names the ``optimizer_id`` (for people), an ``owner`` (the sha256 of a secret token only the
holder has), a lease that the holder renews, and published progress (iteration, best score,
best value) that watchers see. An expired lease counts as released.

Locks fence: each grant carries an ``epoch`` (the variable's record revision it was granted
from, so it grows with every new grant; renewals keep it). A holder writes with its token and
the epochs it was granted (:func:`fenced_owner`); a write whose grant is no longer the live
lock (the lease expired, another optimizer preempted it, or it was released) is refused with a
``LockedError`` that says the lock was lost, even when nobody holds the lock any more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import dspex.errors as errors
from dspex._model import freeze

__all__ = [
    "POLICIES",
    "acquire",
    "check_write",
    "fenced_owner",
    "holder",
    "owner_digest",
    "parse_owner",
    "release",
    "renew",
]

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


_WAIT_HINT = "Wait for it, or acquire with policy='wait' or 'preempt'"


def _locked(name: str, held: Lock, action: str, now: float) -> errors.LockedError:
    remaining = max(0.0, held["expires_at"] - now)
    return errors.LockedError(
        f"variable {name!r} is locked by optimizer {held['optimizer_id']!r} "
        f"(lease ends in {remaining:.1f}s unless renewed); cannot {action}. {_WAIT_HINT}",
        name=name,
        holder=held["optimizer_id"],
    )


def still_locked(refused: errors.LockedError, waited: float) -> errors.LockedError:
    """The error of an acquire with policy ``wait`` that gave up after ``waited`` seconds:
    ``refused`` (the last refusal) with advice for one that already waited."""
    return errors.LockedError(
        f"{refused.message.removesuffix(_WAIT_HINT)}Waited {waited:.1f}s with policy 'wait' "
        "and it is still held: wait longer (a larger timeout), or take it over with policy "
        "'preempt'",
        **refused.details,
    )


def acquire(
    lock: Lock | None,
    name: str,
    *,
    owner: str,
    optimizer_id: str,
    lease: float,
    now: float,
    epoch: int = 0,
    preempt: bool = False,
) -> Lock:
    """The lock after ``owner`` takes it (or renews it, keeping its progress and epoch).

    ``epoch`` is the fencing token of a new grant: the revision of the record it is granted
    from.

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
            "epoch": held.get("epoch", epoch) if mine and held else epoch,
        }
    )
    return taken


def check_write(lock: Lock | None, name: str, owner: str | None, now: float) -> None:
    """Raise LockedError unless ``name`` is unlocked or held by ``owner``; and, when ``owner``
    names a grant of ``name`` (see :func:`fenced_owner`), unless that grant is the live lock.
    """
    token, fences = parse_owner(owner) if owner else (None, {})
    held = holder(lock, now)
    fence = fences.get(name)
    if fence is not None and (
        held is None or held["owner"] != owner_digest(token or "") or held.get("epoch") != fence
    ):
        raise _lost(
            name, held, fence, mine=held is not None and held["owner"] == owner_digest(token or "")
        )
    if held is not None and (token is None or held["owner"] != owner_digest(token)):
        raise _locked(name, held, "write it", now)


def _lost(name: str, held: Lock | None, fence: int, *, mine: bool) -> errors.LockedError:
    if held is None:
        why = "its lease expired or it was released"
    elif not mine:
        why = f"optimizer {held['optimizer_id']!r} holds it now"
    else:
        why = f"it was acquired again since (grant {held.get('epoch')})"
    return errors.LockedError(
        f"the optimization lock on {name!r} was lost (grant {fence}): {why}; this write was "
        "refused. Another optimizer may have written it meanwhile: leave the optimizing block, "
        "re-read the variables and acquire the lock again",
        name=name,
        lost=True,
        fence=fence,
    )


_FENCE_MARK = "|"


def fenced_owner(token: str, fences: Mapping[str, int]) -> str:
    """The lock-owner value a holder writes with: its token and the epoch of each grant."""
    if not fences:
        return token
    grants = ";".join(f"{quote(name, safe='')}={epoch}" for name, epoch in sorted(fences.items()))
    return f"{token}{_FENCE_MARK}{grants}"


def parse_owner(value: str) -> tuple[str, dict[str, int]]:
    """``(token, {name: epoch})`` from a :func:`fenced_owner` value (a bare token: no fences).

    A value that is not in that form counts as a bare token (an older client).
    """
    token, mark, grants = value.partition(_FENCE_MARK)
    if not mark:
        return value, {}
    fences: dict[str, int] = {}
    for grant in grants.split(";"):
        name, sep, epoch = grant.rpartition("=")
        if not sep or not epoch.isdigit():
            return value, {}
        fences[unquote(name)] = int(epoch)
    return token, fences


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
