"""Server side: access control at the store server (who calls, and may they).

The servicer asks an :class:`AccessGuard` before it lets a call reach the provider: the bearer
token names a principal (UNAUTHENTICATED without a known one), and the
:class:`~dspex.state.core.access.AccessPolicy` decides each (permission, session, variable);
``"@own"`` rules look up the session's owner (the principal that created it) in the provider.
A refused call changes nothing. Listing and watching every variable deliver only what the
principal may read or observe. The rules, per RPC, are documented in ``docs/security.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from dspex._model import SessionInfo
from dspex.errors import SessionError
from dspex.state.core.access import AccessPolicy
from dspex.state.core.contract import StateProvider

__all__ = ["AUTHORIZATION_KEY", "AccessGuard"]

AUTHORIZATION_KEY: Final = "authorization"
_BEARER: Final = "bearer "


class AccessGuard:
    """Authenticates calls and checks permissions against one policy and one provider.

    Args:
        policy: tokens, principals and allow rules (everything else is denied).
        provider: where session owners are looked up.
    """

    def __init__(self, policy: AccessPolicy, provider: StateProvider) -> None:
        self.policy = policy
        self._provider = provider

    def authenticate(self, authorization: str | None) -> str:
        """The principal of an ``authorization: Bearer <token>`` header (the scheme name is
        case-insensitive, as in HTTP).

        Raises:
            UnauthenticatedError: no header, not a bearer token, or an unknown token.
        """
        token = None
        if authorization and authorization[: len(_BEARER)].lower() == _BEARER:
            token = authorization[len(_BEARER) :]
        return self.policy.authenticate(token)

    def _owned(self, principal: str, session_id: str) -> bool:
        """True if ``principal`` created the session.

        Raises:
            SessionError: the session does not exist, was closed or expired (a refusal would
                say nothing more, and an unguessable id cannot be probed).
        """
        return bool(principal) and self._provider.get_session(session_id).owner == principal

    def require(
        self, principal: str, permission: str, session_id: str, names: Iterable[str] = ()
    ) -> None:
        """Allow the call only if ``permission`` covers every one of ``names`` (or, with no
        names, some variables of the session).

        Raises:
            PermissionDeniedError: a name (or the session) is not covered.
            SessionError: the session is not open.
        """
        owned = self._owned(principal, session_id)
        names = list(names)
        if not names:
            self.policy.check_session(principal, permission, session_id, owned)
        for name in names:
            self.policy.check(principal, permission, session_id, owned, name)

    def require_whole(self, principal: str, permission: str, session_id: str) -> None:
        """Allow the call only if ``permission`` covers every variable (a rule with
        ``"variables": "*"``): closing a session needs write on all of it.

        Raises:
            PermissionDeniedError: not every variable is covered.
        """
        owned = self._owned(principal, session_id)
        self.policy.check(principal, permission, session_id, owned, "*")

    def filter(self, principal: str, permission: str, session_id: str) -> Callable[[str], bool]:
        """A predicate saying which variable names ``permission`` covers in the session.

        Raises:
            PermissionDeniedError: it covers no variable of the session at all.
        """
        owned = self._owned(principal, session_id)
        self.policy.check_session(principal, permission, session_id, owned)
        decided: dict[str, bool] = {}

        def allowed(name: str) -> bool:
            verdict = decided.get(name)
            if verdict is None:
                verdict = self.policy.allows(principal, permission, session_id, owned, name)
                if len(decided) < 10_000:
                    decided[name] = verdict
            return verdict

        return allowed

    def may_join(self, principal: str, session_id: str | None) -> None:
        """Allow CreateSession: a new id is anyone's to create; an existing one needs read.

        Raises:
            PermissionDeniedError: the session exists and the principal may not read it.
        """
        if session_id is None:
            return
        try:
            owned = self._owned(principal, session_id)
        except SessionError:
            return  # not open: creating it makes it the caller's own
        self.policy.check_session(principal, "read", session_id, owned)

    def readable_sessions(self, principal: str, infos: Iterable[SessionInfo]) -> list[SessionInfo]:
        """The sessions of ``infos`` the principal may read something in."""
        return [
            info
            for info in infos
            if self.policy.allows_session(
                principal, "read", info.session_id, bool(principal) and info.owner == principal
            )
        ]
