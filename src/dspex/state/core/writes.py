"""Core: pure pieces of the store semantics: building writes and building errors.

Used by :class:`~dspex.state.LocalProvider`; nothing here touches an engine or a lock.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Final

import dspex.errors as errors
from dspex._model import SessionInfo, VariableRecord, VariableSpec, VariableUpdate
from dspex.state.core.contract import UpdateResults
from dspex.state.core.identity import current_principal, current_writer
from dspex.state.core.watch import END
from dspex.state.engines import SessionMeta, Write

__all__ = [
    "END",
    "VALUE_KINDS",
    "abort_batch",
    "annotated",
    "check_session_id",
    "cannot_resume",
    "check_name",
    "conflict",
    "contention",
    "info",
    "initial_updates",
    "mark_stale",
    "missing_variable",
    "new_value",
    "remember",
    "same_spec",
]

VALUE_KINDS = frozenset({"set", "rollback", "register"})
"""Update kinds that change a value (and so make dependents stale)."""

_KEPT_IDS = 10_000


def new_value(old: VariableRecord, kind: str, value: Any) -> Write:
    """The next version of ``old`` holding ``value`` (fresh: not stale)."""
    return Write(
        old.name, old.revision, kind, old.spec, value, old.version + 1,
        current_writer.get(), old.metadata, False, old.lock,
    )  # fmt: skip


def annotated(old: VariableRecord, kind: str, lock: Mapping[str, Any] | None) -> Write:
    """``old`` at the same version with a new ``lock`` (or deleted, for kind "delete")."""
    return Write(
        old.name, old.revision, kind, old.spec, old.value, old.version,
        current_writer.get(), old.metadata, old.stale, lock,
    )  # fmt: skip


def mark_stale(old: VariableRecord) -> Write | None:
    """``old`` marked stale (None if it already is)."""
    if old.stale:
        return None
    return Write(
        old.name, old.revision, "stale", old.spec, old.value, old.version,
        old.writer, old.metadata, True, old.lock,
    )  # fmt: skip


def initial_updates(records: Iterable[VariableRecord]) -> list[VariableUpdate]:
    """Current records as "initial" watch updates."""
    return [VariableUpdate(r.revision, "initial", r.name, r) for r in records]


def info(meta: SessionMeta) -> SessionInfo:
    """Engine session metadata as the public SessionInfo."""
    return SessionInfo(
        meta.session_id,
        meta.created_at,
        meta.revision,
        meta.variable_count,
        meta.last_heartbeat,
        meta.ttl,
        meta.owner,
    )


def remember(ids: dict[str, None], session_id: str) -> None:
    """Add to a bounded insertion-ordered id set, dropping the oldest."""
    ids[session_id] = None
    if len(ids) > _KEPT_IDS:
        del ids[next(iter(ids))]


def same_spec(existing: VariableRecord, spec: VariableSpec, session_id: str) -> VariableRecord:
    """``existing`` if registered with ``spec``; else VariableExistsError."""
    if existing.spec != spec:
        raise errors.VariableExistsError(
            f"variable {existing.name!r} is already registered as {existing.spec.to_json()}; "
            f"cannot re-register it as {spec.to_json()} (delete it first)",
            name=existing.name,
            session_id=session_id,
        )
    return existing


def check_name(name: str) -> None:
    """Refuse names that are empty, too long or unprintable."""
    if not isinstance(name, str) or not name or len(name) > 256 or not name.isprintable():
        raise errors.VariableValueError(
            f"variable name {name!r} must be a printable string of 1-256 characters",
            name=str(name),
        )


MAX_SESSION_ID: Final = 256
"""Longest session id accepted (characters), like a variable name."""


def check_session_id(session_id: str) -> None:
    """Refuse session ids that are empty, too long or unprintable (NUL, newlines, escapes),
    like variable names: they end up in logs, keys, file rows and terminal output.

    Raises:
        ConstraintError: naming what is wrong (a long id is shown shortened).
    """
    if (
        isinstance(session_id, str)
        and session_id
        and len(session_id) <= MAX_SESSION_ID
        and session_id.isprintable()
    ):
        return
    shown = repr(session_id[:40]) + ("..." if len(session_id) > 40 else "")
    raise errors.ConstraintError(
        f"session id {shown} ({len(session_id)} characters) must be a printable string of "
        f"1-{MAX_SESSION_ID} characters (no control characters); omit it to get a random id",
        session_id=session_id[:40],
    )


def missing_variable(
    session_id: str, name: str, known: Iterable[str] = ()
) -> errors.VariableNotFoundError:
    """The error for an unknown variable, naming the ``known`` name it is closest to (a typo).

    Not under access control (an authenticated principal): a name the principal may not read
    must not leak through the hint.
    """
    hinted = isinstance(name, str) and not current_principal.get()
    close = difflib.get_close_matches(name, list(known), n=1) if hinted else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return errors.VariableNotFoundError(
        f"no variable {name!r} in session {session_id!r}{hint}; register it first",
        name=name,
        session_id=session_id,
    )


def conflict(old: VariableRecord, expected: int, session_id: str) -> errors.VersionConflictError:
    """The error for a stale ``expected_version``."""
    return errors.VersionConflictError(
        f"variable {old.name!r} is at version {old.version}, not the expected "
        f"{expected}; re-read it and retry",
        name=old.name,
        version=old.version,
        expected_version=expected,
        session_id=session_id,
    )


def contention(what: str) -> errors.VersionConflictError:
    """The error when compare-and-set kept losing races."""
    return errors.VersionConflictError(
        f"{what} kept changing under concurrent writers; retry the call", name=what
    )


def cannot_resume(session_id: str, after: int, why: str, earliest: int) -> errors.WatchLaggedError:
    """The error for a watch that cannot resume after ``after``; ``earliest`` is the oldest
    ``after_revision`` the store can resume from (its ``resume_from``)."""
    return errors.WatchLaggedError(
        f"cannot resume session {session_id!r} after revision {after}: {why}; re-read the "
        f"variables (include_initial) and watch again, resuming from revision {earliest} at "
        "the earliest",
        resume_from=earliest,
        session_id=session_id,
    )


def abort_batch(values: Mapping[str, Any], failed: UpdateResults) -> UpdateResults:
    """Per-name results of an atomic batch that failed on ``failed``."""
    reason = ", ".join(sorted(failed))
    return {
        name: failed.get(name)
        or errors.BatchUpdateError(
            f"{name!r} not applied: the atomic batch failed on {reason}", name=name
        )
        for name in values
    }
