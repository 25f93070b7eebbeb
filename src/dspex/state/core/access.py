"""Core: access control: bearer tokens -> principals, and permission rules.

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
principal may create sessions (they become its own). Serving tools needs the ``serve``
permission on the tool's name, matched by the rule's ``tools`` glob (default ``"*"``).
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

PERMISSIONS = ("read", "write", "observe", "optimize", "serve")


@dataclass(frozen=True)
class AccessRule:
    """Allow ``permissions`` to ``principal`` on matching sessions and variables."""

    principal: str
    sessions: str
    variables: str
    permissions: frozenset[str]
    tools: str = "*"

    def matches(self, principal: str, session_id: str, owned: bool, variable: str) -> bool:
        """True if this rule covers the principal, session and variable."""
        return self.covers_session(principal, session_id, owned) and fnmatch.fnmatchcase(
            variable, self.variables
        )

    def matches_tool(self, principal: str, session_id: str, owned: bool, tool: str) -> bool:
        """True if this rule covers the principal, session and tool name."""
        return self.covers_session(principal, session_id, owned) and fnmatch.fnmatchcase(
            tool, self.tools
        )

    def covers_session(self, principal: str, session_id: str, owned: bool) -> bool:
        """True if this rule covers the principal and session (for some variables)."""
        if self.principal not in (principal, "*"):
            return False
        if self.sessions == "@own":
            return owned
        return fnmatch.fnmatchcase(session_id, self.sessions)


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
            raise errors.ConstraintError(
                f"cannot read auth file {str(path)!r}: {exc}; give a readable JSON file in the "
                "format of docs/security.md ('The auth file')"
            ) from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> AccessPolicy:
        """Build a policy from the parsed auth-file structure."""
        if not isinstance(data, dict) or not isinstance(data.get("principals"), dict):
            raise _bad(source, "top level must be an object with 'principals' and 'rules'")
        tokens = {name: _digest(name, entry, source) for name, entry in data["principals"].items()}
        if len(set(tokens.values())) != len(tokens):
            raise _bad(source, "two principals share one token; give each its own")
        rules_data = data.get("rules", [])
        if not isinstance(rules_data, list):
            raise _bad(source, "'rules' must be a list of rule objects")
        rules = [_rule(entry, tokens, source) for entry in rules_data]
        return cls(tokens, rules)

    @classmethod
    def for_token(cls, token: str, principal: str = "token") -> AccessPolicy:
        """A policy with one principal, known by ``token``, allowed everything (``--token``)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        return cls({principal: digest}, [AccessRule(principal, "*", "*", frozenset(PERMISSIONS))])

    def authenticate(self, token: str | None) -> str:
        """Return the principal owning ``token``.

        Raises:
            UnauthenticatedError: no token, or an unknown one.
        """
        if not token:
            raise errors.UnauthenticatedError(
                "this store requires a bearer token: send the call metadata "
                "'authorization: Bearer <token>' (dspex clients read $DSPEX_TOKEN)"
            )
        digest = hashlib.sha256(token.encode()).hexdigest()
        for principal, known in self._digests.items():
            if hmac.compare_digest(digest, known):
                return principal
        raise errors.UnauthenticatedError(
            "the bearer token is not known to this store; send one it accepts (the token "
            "`dspex serve` was given with --token-file or $DSPEX_TOKEN, or a principal's token "
            "of its --auth-file)"
        )

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

    def check_tool(
        self, principal: str, permission: str, session_id: str, owned: bool, tool: str
    ) -> None:
        """Raise PermissionDeniedError unless a rule grants ``permission`` on tool ``tool``."""
        if not any(
            permission in rule.permissions
            and rule.matches_tool(principal, session_id, owned, tool)
            for rule in self.rules
        ):
            raise errors.PermissionDeniedError(
                f"principal {principal!r} may not {permission} tool {tool!r} in session "
                f"{session_id!r}; an auth rule must allow {permission!r} with a 'tools' pattern "
                "matching it",
                principal=principal,
                permission=permission,
                tool=tool,
            )

    def allows_session(
        self, principal: str, permission: str, session_id: str, owned: bool
    ) -> bool:
        """True if some rule grants ``permission`` on the session for at least some variables
        (listing and watching all variables then show only the allowed ones)."""
        return any(
            permission in rule.permissions and rule.covers_session(principal, session_id, owned)
            for rule in self.rules
        )

    def check_session(self, principal: str, permission: str, session_id: str, owned: bool) -> None:
        """Raise PermissionDeniedError unless :meth:`allows_session`."""
        if not self.allows_session(principal, permission, session_id, owned):
            raise errors.PermissionDeniedError(
                f"principal {principal!r} may not {permission} session {session_id!r}",
                principal=principal,
                permission=permission,
            )


def _bad(source: str, why: str) -> errors.ConstraintError:
    return errors.ConstraintError(f"auth file {source!r}: {why}")


_RULE_KEYS = frozenset({"principal", "sessions", "variables", "tools", "allow"})


def _digest(name: str, entry: Any, source: str) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("token_sha256"), str):
        digest = str(entry["token_sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise _bad(source, f"principal {name!r}: 'token_sha256' must be 64 hex digits")
        return digest
    if isinstance(entry, dict) and isinstance(entry.get("token"), str) and entry["token"]:
        return hashlib.sha256(entry["token"].encode()).hexdigest()
    raise _bad(source, f"principal {name!r} needs 'token' or 'token_sha256'")


def _rule(entry: Any, tokens: Mapping[str, str], source: str) -> AccessRule:
    if not isinstance(entry, dict) or not isinstance(entry.get("principal"), str):
        raise _bad(source, f"rule {entry!r} needs a 'principal'")
    unknown_keys = set(entry) - _RULE_KEYS
    if unknown_keys:
        raise _bad(source, f"rule {entry!r} has unknown keys {sorted(unknown_keys)}")
    principal = entry["principal"]
    if principal != "*" and principal not in tokens:
        raise _bad(source, f"rule names unknown principal {principal!r}")
    allow = entry.get("allow", [])
    if (
        not isinstance(allow, list)
        or not allow
        or not all(isinstance(p, str) and p in PERMISSIONS for p in allow)
    ):
        raise _bad(source, f"rule 'allow' must list some of {PERMISSIONS}, got {allow!r}")
    patterns = (
        entry.get("sessions", "@own"),
        entry.get("variables", "*"),
        entry.get("tools", "*"),
    )
    if not all(isinstance(p, str) and p for p in patterns):
        raise _bad(
            source, f"rule {entry!r}: 'sessions', 'variables' and 'tools' must be glob strings"
        )
    return AccessRule(principal, patterns[0], patterns[1], frozenset(allow), patterns[2])
