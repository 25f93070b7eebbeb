"""Core: the StateProvider contract every backend (local, session store, ...) fulfils.

This module is mostly documentation: the Protocol's docstrings are the contract, and the shared
contract test suite (``tests/state/test_contract.py``) asserts every ``Raises:`` against every
backend.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from dspex._model import SessionInfo, VariableRecord, VariableSpec
from dspex.errors import DspexError
from dspex.state.core.watch import VariableWatch

__all__ = ["StateProvider", "UpdateResults"]

UpdateResults = dict[str, VariableRecord | DspexError]
"""Per-name outcome of a batch update: the new record, or the error for that name."""


class StateProvider(Protocol):
    """Stores sessions and their typed, versioned variables.

    Every implementation guarantees:
      * Thread safety: one instance may be shared by many threads.
      * Snapshots: returned records are immutable and never change after being returned.
      * Ordering: each variable's version grows by one per change; the session revision grows
        by one per change to any variable; watches deliver updates in revision order.
      * Atomicity: a call that raises changed nothing.
      * Errors: only exceptions from :mod:`dspex.errors` escape.
    """

    def create_session(self, session_id: str | None = None, *, ttl: float | None = None) -> str:
        """Create a session and return its id (a random id when ``session_id`` is None).

        Creating an id that already exists returns it unchanged (joining is idempotent).

        Raises:
            LimitExceededError: the store holds its maximum number of sessions.
        """
        ...

    def get_session(self, session_id: str) -> SessionInfo:
        """Return a summary of the session.

        Raises:
            SessionNotFoundError: no such session.
            SessionClosedError: the session was closed.
        """
        ...

    def list_sessions(self) -> list[SessionInfo]:
        """Return a summary of every open session."""
        ...

    def heartbeat(self, session_id: str) -> None:
        """Mark the session alive, postponing TTL expiry.

        Raises:
            SessionNotFoundError: no such session (or it expired).
            SessionClosedError: the session was closed.
        """
        ...

    def close_session(self, session_id: str) -> None:
        """Remove the session and its variables; its watches end normally.

        Later calls naming the session raise ``SessionClosedError``.

        Raises:
            SessionNotFoundError: no such session.
            SessionClosedError: the session was already closed.
        """
        ...

    def register_variable(
        self,
        session_id: str,
        name: str,
        spec: VariableSpec,
        value: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> VariableRecord:
        """Register ``name`` with ``spec`` and an initial ``value`` (version 1).

        Registering the same name with an equal spec returns the existing record unchanged
        (``value`` must still fit the spec). The provider re-checks ``spec`` (it may not come
        from ``make_spec``). ``metadata`` is kept as a JSON object, as its JSON text reads back
        (string keys, numpy values as lists), by every provider alike, and is checked first,
        before the name, the spec, the session and the value.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableExistsError: ``name`` exists with a different spec.
            VariableTypeError, VariableValueError: ``value`` does not fit ``spec``,
                ``metadata`` is not JSON-serializable, or ``name`` is not a printable string
                of 1-256 characters.
            ConstraintError: ``spec`` has an unknown type, an unknown constraint or
                inconsistent bounds.
            PatternError: ``spec``'s ``pattern`` is not a valid regular expression.
        """
        ...

    def get_variable(self, session_id: str, name: str) -> VariableRecord:
        """Return the current record of ``name``.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: no variable ``name``.
        """
        ...

    def get_variables(self, session_id: str, names: Collection[str]) -> dict[str, VariableRecord]:
        """Return the current records of ``names`` (all of them, read at one revision).

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: one of ``names`` is not registered.
        """
        ...

    def set_variable(
        self, session_id: str, name: str, value: Any, *, expected_version: int | None = None
    ) -> VariableRecord:
        """Validate and store ``value`` as the next version of ``name``.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: no variable ``name``.
            VariableTypeError, VariableValueError: ``value`` does not fit the spec.
            VersionConflictError: ``expected_version`` is not the current version.
        """
        ...

    def update_variables(
        self,
        session_id: str,
        values: Mapping[str, Any],
        *,
        atomic: bool = False,
        expected_versions: Mapping[str, int] | None = None,
    ) -> UpdateResults:
        """Set several variables; return the outcome per name (in the order of ``values``).

        With ``atomic=True`` either every name is applied or none is: on any failure, the
        failing names map to their errors and the others to a ``BatchUpdateError`` saying they
        were not applied. With ``atomic=False`` each name is applied independently. A value
        no session store can carry (not JSON, not a numeric array) fails its own name with
        ``VariableTypeError`` like any value of the wrong type.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
        """
        ...

    def list_variables(self, session_id: str, pattern: str = "*") -> list[VariableRecord]:
        """Return the records whose names match the glob ``pattern``, sorted by name.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
        """
        ...

    def delete_variable(self, session_id: str, name: str) -> None:
        """Remove ``name`` and its history; watchers get a ``"delete"`` update.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: no variable ``name``.
        """
        ...

    def get_history(
        self, session_id: str, name: str, limit: int | None = None
    ) -> list[VariableRecord]:
        """Return the kept versions of ``name``, oldest first (the last ``limit`` if given).

        At most ``history_size`` versions are kept (a provider setting); older ones are dropped.
        ``limit=0`` returns an empty list.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: no variable ``name``.
        """
        ...

    def rollback_variable(self, session_id: str, name: str, version: int) -> VariableRecord:
        """Write the value of an earlier ``version`` of ``name`` as a new version.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: no variable ``name``.
            VersionNotFoundError: ``version`` is not kept in the history.
        """
        ...

    def watch_variables(
        self,
        session_id: str,
        names: Collection[str] = (),
        *,
        after_revision: int | None = None,
        include_initial: bool = False,
    ) -> VariableWatch:
        """Watch changes to ``names`` (all variables when empty), in revision order.

        ``include_initial`` first delivers the current records as ``"initial"`` updates.
        ``after_revision`` first replays every kept change after that revision, so a
        reconnecting watcher sees no gap and no duplicate.

        A watcher whose bounded queue fills up is never silently skipped: iteration raises
        ``WatchLaggedError`` whose ``resume_from`` is the revision of the last update it was
        given; watching again with ``after_revision=resume_from`` loses nothing. Leaving the
        ``with`` block (or ``cancel()``) ends the watch; closing the session ends it normally.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            WatchLaggedError: ``after_revision`` is older than the kept change log, or newer
                than the session's revision; watch again with ``include_initial=True``.
        """
        ...

    def add_dependency(self, session_id: str, upstream: str, downstream: str) -> None:
        """Add the edge ``upstream -> downstream`` to the session's dependency DAG.

        When an upstream changes, every transitive downstream is marked stale (in its record
        and with a ``"stale"`` watch update) until it is written again.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: either variable is not registered.
            CycleError: the edge would close a cycle (the message names it).
        """
        ...

    def get_dependents(self, session_id: str, name: str) -> list[str]:
        """Return the transitive dependents of ``name`` in topological order.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: no variable ``name``.
        """
        ...

    def get_dependencies(self, session_id: str) -> list[tuple[str, str]]:
        """Return every (upstream, downstream) edge of the session, sorted.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
        """
        ...

    def acquire_lock(
        self,
        session_id: str,
        name: str,
        *,
        owner: str,
        optimizer_id: str,
        lease: float = 30.0,
        policy: str = "fail",
        timeout: float | None = None,
    ) -> VariableRecord:
        """Take the optimization lock on ``name`` for ``owner`` (a secret token).

        While held, writes to ``name`` succeed only in a context whose
        :data:`~dspex.state.current_lock_owner` is ``owner``. The lock shows in the record and
        in ``"lock"`` watch updates. ``policy``: ``"fail"`` raises if another optimizer holds
        it, ``"wait"`` waits until it is free (up to ``timeout`` seconds), ``"preempt"`` takes
        it over. Acquiring again as the same owner renews it.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: no variable ``name``.
            LockedError: held by another optimizer (policy "fail", or "wait" timed out).
            VariableValueError: unknown policy or non-positive lease.
        """
        ...

    def release_lock(self, session_id: str, name: str, *, owner: str) -> VariableRecord:
        """Release ``owner``'s lock on ``name``; releasing a lock already gone is a no-op.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: no variable ``name``.
            LockedError: another optimizer holds it (only the holder may release).
        """
        ...

    def renew_lock(
        self,
        session_id: str,
        name: str,
        *,
        owner: str,
        progress: Mapping[str, Any] | None = None,
    ) -> VariableRecord:
        """Extend ``owner``'s lease and merge optimizer ``progress`` into the lock.

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open.
            VariableNotFoundError: no variable ``name``.
            LockedError: the lock expired or is held by another optimizer.
        """
        ...

    def close(self) -> None:
        """Release the provider's resources (channels, threads). Idempotent.

        Every watch it opened ends normally (see :class:`VariableWatch`), so no thread stays
        blocked on one.
        """
        ...
