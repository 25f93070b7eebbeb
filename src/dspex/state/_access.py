"""Layer 2: access control: bearer tokens -> principals, and permission rules.

The auth file is JSON (documented in docs/security.md)::

    {
      "principals": {"optimizer": {"token_sha256": "<hex>"}, "worker": {"token": "w-secret"}},
      "rules": [
        {"principal": "optimizer", "sessions": "*", "variables": "*",
         "allow": ["read", "write", "observe", "optimize"]},
        {"principal": "worker", "sessions": "@own", "variables": "*", "allow": ["read"]}
      ]
    }

Once a policy is in force everything not allowed is denied. ``sessions`` and ``variables`` are
glob patterns; ``"@own"`` matches the sessions the principal created. Any authenticated
principal may create sessions (they become its own).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspex.errors as errors

__all__ = ["PERMISSIONS", "AccessPolicy", "AccessRule"]

PERMISSIONS = ("read", "write", "observe", "optimize")


@dataclass(frozen=True)
class AccessRule:
    """Allow ``permissions`` to ``principal`` on matching sessions and variables."""

    principal: str
    sessions: str
    variables: str
    permissions: frozenset[str]

    def matches(self, principal: str, session_id: str, owned: bool, variable: str) -> bool:
        """True if this rule covers the principal, session and variable."""
        if self.principal not in (principal, "*"):
            return False
        if self.sessions == "@own":
            session_ok = owned
        else:
            session_ok = fnmatch.fnmatchcase(session_id, self.sessions)
        return session_ok and fnmatch.fnmatchcase(variable, self.variables)


class AccessPolicy:
    """Maps bearer tokens to principals and decides each (permission, session, variable).

    Args:
        tokens: principal -> token digest (sha256 hex).
        rules: the allow rules; nothing else is allowed.
    """

    def __init__(self, tokens: Mapping[str, str], rules: list[AccessRule]) -> None:
        self._digests = dict(tokens)
        self.rules = list(rules)

    @classmethod
    def from_file(cls, path: str | Path) -> AccessPolicy:
        """Read the JSON auth file described in the module docstring.

        Raises:
            ConstraintError: the file is missing, not JSON, or not in the documented shape.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise errors.ConstraintError(f"cannot read auth file {str(path)!r}: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> AccessPolicy:
        """Build a policy from the parsed auth-file structure."""
        if not isinstance(data, dict) or not isinstance(data.get("principals"), dict):
            raise _bad(source, "top level must be an object with 'principals' and 'rules'")
        tokens = {name: _digest(name, entry, source) for name, entry in data["principals"].items()}
        rules = [_rule(entry, tokens, source) for entry in data.get("rules", [])]
        return cls(tokens, rules)

    def authenticate(self, token: str | None) -> str:
        """Return the principal owning ``token``.

        Raises:
            UnauthenticatedError: no token, or an unknown one.
        """
        if not token:
            raise errors.UnauthenticatedError(
                "this store requires a bearer token; pass token=... or set DSPEX_TOKEN"
            )
        digest = hashlib.sha256(token.encode()).hexdigest()
        for principal, known in self._digests.items():
            if hmac.compare_digest(digest, known):
                return principal
        raise errors.UnauthenticatedError("the bearer token is not known to this store")

    def check(
        self, principal: str, permission: str, session_id: str, owned: bool, variable: str = "*"
    ) -> None:
        """Raise PermissionDeniedError unless a rule allows it."""
        if not self.allows(principal, permission, session_id, owned, variable):
            target = f"variable {variable!r} of " if variable != "*" else ""
            raise errors.PermissionDeniedError(
                f"principal {principal!r} may not {permission} {target}session {session_id!r}",
                principal=principal,
                permission=permission,
            )

    def allows(
        self, principal: str, permission: str, session_id: str, owned: bool, variable: str = "*"
    ) -> bool:
        """True if some rule grants ``permission`` here."""
        return any(
            permission in rule.permissions and rule.matches(principal, session_id, owned, variable)
            for rule in self.rules
        )


def _bad(source: str, why: str) -> errors.ConstraintError:
    return errors.ConstraintError(f"auth file {source!r}: {why}")


def _digest(name: str, entry: Any, source: str) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("token_sha256"), str):
        return str(entry["token_sha256"]).lower()
    if isinstance(entry, dict) and isinstance(entry.get("token"), str) and entry["token"]:
        return hashlib.sha256(entry["token"].encode()).hexdigest()
    raise _bad(source, f"principal {name!r} needs 'token' or 'token_sha256'")


def _rule(entry: Any, tokens: Mapping[str, str], source: str) -> AccessRule:
    if not isinstance(entry, dict) or not isinstance(entry.get("principal"), str):
        raise _bad(source, f"rule {entry!r} needs a 'principal'")
    principal = entry["principal"]
    if principal != "*" and principal not in tokens:
        raise _bad(source, f"rule names unknown principal {principal!r}")
    allow = entry.get("allow", [])
    unknown = set(allow) - set(PERMISSIONS)
    if not isinstance(allow, list) or not allow or unknown:
        raise _bad(source, f"rule 'allow' must list some of {PERMISSIONS}, got {allow!r}")
    return AccessRule(
        principal,
        str(entry.get("sessions", "@own")),
        str(entry.get("variables", "*")),
        frozenset(allow),
    )
