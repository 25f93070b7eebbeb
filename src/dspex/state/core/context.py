"""Core: SessionContext, a view of any StateProvider bound to one session id.

Workers, the CLI and :class:`dspex.Session` all use these verbs; there is no second client.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

import dspex.errors as errors
from dspex._model import VariableRecord, make_spec
from dspex.errors import BatchUpdateError
from dspex.state.core.contract import StateProvider, UpdateResults
from dspex.state.core.optimizing import OptimizationLock, Recomputer
from dspex.state.core.watch import VariableWatch

__all__ = ["SessionContext", "StoreConnector", "require_owner"]


class StoreConnector(Protocol):
    """Opens a provider that follows one session of the store at an address.

    :func:`dspex.state.client.connect.open_store` is the one implementation; ``dspex.state``
    installs it as :attr:`SessionContext.connector`, so this module never imports the client.
    """

    def __call__(
        self,
        store: str,
        *,
        token: str | None = None,
        follow: str | None = None,
        owner: str | None = None,
    ) -> StateProvider: ...


class SessionContext:
    """The session verbs (``register``, ``get``, ``set`` ...) for one session of one provider.

    Args:
        provider: where the session lives.
        session_id: the session to bind to (it must exist).
    """

    connector: ClassVar[StoreConnector | None] = None
    """How :meth:`connect` reaches a store (installed by ``dspex.state``)."""

    def __init__(self, provider: StateProvider, session_id: str) -> None:
        self.provider = provider
        self.session_id = session_id
        self._recomputer: Recomputer | None = None

    def register(
        self,
        name: str,
        type: Any,
        value: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
        **constraints: Any,
    ) -> VariableRecord:
        """Register a typed variable; the same spec again returns the existing record.

        Examples:
            >>> session.register("temperature", float, 0.7, min=0.0, max=2.0)  # doctest: +SKIP
        """
        spec = make_spec(type, **constraints)
        return self.provider.register_variable(
            self.session_id, name, spec, value, metadata=metadata
        )

    def get(self, name: str) -> Any:
        """Return the current value of ``name``."""
        return self.provider.get_variable(self.session_id, name).value

    def variable(self, name: str) -> VariableRecord:
        """Return the full current record of ``name`` (value, version, revision, writer...)."""
        return self.provider.get_variable(self.session_id, name)

    def set(self, name: str, value: Any, *, expected_version: int | None = None) -> VariableRecord:
        """Validate and store a new value; returns the new record."""
        return self.provider.set_variable(
            self.session_id, name, value, expected_version=expected_version
        )

    def update(
        self,
        values: Mapping[str, Any],
        *,
        atomic: bool = True,
        expected_versions: Mapping[str, int] | None = None,
    ) -> UpdateResults:
        """Set several variables at once; returns the new record per name.

        Raises:
            BatchUpdateError: some names failed; ``err.results`` holds the outcome per name.
                With ``atomic=True`` (the default) nothing was applied.
        """
        results = self.provider.update_variables(
            self.session_id, values, atomic=atomic, expected_versions=expected_versions
        )
        # Name the real failures; in an atomic batch the other names only say "not applied".
        causes = [
            f"{name}: {result}"
            for name, result in results.items()
            if isinstance(result, Exception) and type(result) is not BatchUpdateError
        ]
        if causes or any(isinstance(r, Exception) for r in results.values()):
            applied = "nothing was applied" if atomic else "the other names were applied"
            raise BatchUpdateError(
                f"batch update failed ({applied}); " + "; ".join(causes),
                results=results,
                session_id=self.session_id,
            )
        return results

    def list(self, pattern: str = "*") -> list[VariableRecord]:
        """Return the records whose names match the glob ``pattern``."""
        return self.provider.list_variables(self.session_id, pattern)

    def delete(self, name: str) -> None:
        """Remove ``name`` and its history."""
        self.provider.delete_variable(self.session_id, name)

    # `builtins.list`: inside the class body `list` is the verb defined above.
    def history(self, name: str, limit: int | None = None) -> builtins.list[VariableRecord]:
        """Return the kept versions of ``name``, oldest first."""
        return self.provider.get_history(self.session_id, name, limit)

    def rollback(self, name: str, version: int) -> VariableRecord:
        """Write the value of an earlier ``version`` as a new version."""
        return self.provider.rollback_variable(self.session_id, name, version)

    def watch(
        self, *names: str, after_revision: int | None = None, initial: bool = False
    ) -> VariableWatch:
        """Watch changes to ``names`` (every variable when none are given).

        Use as a context manager; leaving it cancels the watch.
        """
        return self.provider.watch_variables(
            self.session_id, names, after_revision=after_revision, include_initial=initial
        )

    def depend(
        self,
        upstream: str,
        downstream: str,
        *,
        recompute: Callable[[Mapping[str, Any]], Any] | None = None,
    ) -> None:
        """Declare that ``downstream`` derives from ``upstream`` (one DAG per session).

        When ``upstream`` changes, ``downstream`` is marked stale. With ``recompute``, this
        process also recomputes it: ``recompute({upstream_name: value, ...})`` runs in a
        background thread, in topological order, and its result is set as the new value. If
        it raises there, the error is logged and ``downstream`` stays stale (its record says
        so) until another variable changes; the recomputing goes on. While the store cannot
        be reached, the recomputing pauses (logged) and then catches up on what went stale.

        Raises:
            CycleError: the edge would close a cycle.
        """
        self.provider.add_dependency(self.session_id, upstream, downstream)
        if recompute is not None:
            if self._recomputer is None:
                self._recomputer = Recomputer(self)
            self._recomputer.add(downstream, recompute)

    def dependents(self, name: str) -> builtins.list[str]:
        """The transitive dependents of ``name``, in topological order."""
        return self.provider.get_dependents(self.session_id, name)

    def optimizing(
        self,
        *names: str,
        optimizer_id: str | None = None,
        lease: float = 30.0,
        policy: str = "fail",
        timeout: float | None = None,
    ) -> OptimizationLock:
        """Hold the optimization locks on ``names`` for the ``with`` block.

        Inside the block this context may write the variables; other writers get a
        :class:`~dspex.errors.LockedError` naming ``optimizer_id``. The lease is renewed in the
        background and the locks are released on exit (or expire ``lease`` seconds after this
        process dies). Publish progress with ``lock.report(iteration=..., best_score=...)``.

        Examples:
            >>> with session.optimizing("temperature", optimizer_id="grid") as lock:
            ...     session.set("temperature", 0.3)
            ...     lock.report(iteration=1, best_score=0.8, best_value=0.3)
        """
        return OptimizationLock(
            self,
            names,
            optimizer_id=optimizer_id or f"optimizer-{uuid.uuid4().hex[:8]}",
            lease=lease,
            policy=policy,
            timeout=timeout,
        )

    @classmethod
    def connect(
        cls,
        address: str,
        session_id: str,
        *,
        token: str | None = None,
        owner: str | None = None,
    ) -> SessionContext:
        """Bind to ``session_id`` in the session store at ``address`` (for worker processes).

        Reads are served from a cache that a watch stream keeps coherent: your own writes are
        seen at once, others' within the watch delivery time; after a dropped stream or store
        restart the cache resumes from the last revision it saw. The store client is loaded
        only here (through :attr:`connector`), so local mode never loads grpc. With ``owner``,
        joining is refused unless that principal created the session (so a session someone
        else pre-created under an agreed id is never used by mistake).

        Raises:
            SessionNotFoundError, SessionClosedError: the session is not open in that store.
            PermissionDeniedError: ``owner`` was given and another principal owns the session.
            StoreUnavailableError: the store cannot be reached.

        Examples:
            >>> ctx = SessionContext.connect("grpc://127.0.0.1:50051", sid)  # doctest: +SKIP
            >>> ctx.get("temperature")  # doctest: +SKIP
            0.7
        """
        if cls.connector is None:
            raise RuntimeError("import dspex.state to install the store connector")
        return cls(cls.connector(address, token=token, follow=session_id, owner=owner), session_id)


def require_owner(provider: StateProvider, session_id: str, owner: str | None) -> None:
    """Check, when ``owner`` is given, that this principal created the session.

    Raises:
        PermissionDeniedError: another principal (or none: an open store) owns it.
        SessionNotFoundError: the session does not exist.
    """
    if owner is None:
        return
    found = provider.get_session(session_id).owner
    if found != owner:
        raise errors.PermissionDeniedError(
            f"session {session_id!r} is owned by {found or 'nobody (a store without auth)'!r}, "
            f"not {owner!r}: refusing to join it (someone else may have created it under this "
            "id first); check the id, or join without owner=... if that is expected",
            session_id=session_id,
            owner=found,
        )
