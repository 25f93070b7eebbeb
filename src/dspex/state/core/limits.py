"""Core: configurable store limits and the checks that enforce them."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import dspex.errors as errors
from dspex._model import VariableSpec
from dspex.state.engines.sizes import SIZED_TYPES, exceeded, value_size

__all__ = ["SIZED_TYPES", "LimitChecker", "exceeded", "uncounted_watch", "value_size"]

uncounted_watch: ContextVar[bool] = ContextVar("dspex_uncounted_watch", default=False)
"""Set by the store server around its internal wake-up watches, which do not count against
``max_watchers`` (only client watches do)."""


class LimitChecker:
    """Upper bounds a store enforces; ``None`` means unbounded."""

    def __init__(
        self,
        max_sessions: int | None = None,
        max_variables: int | None = None,
        max_value_bytes: int | None = None,
        max_watchers: int | None = None,
    ) -> None:
        for name, limit in (
            ("max_sessions", max_sessions),
            ("max_variables", max_variables),
            ("max_value_bytes", max_value_bytes),
            ("max_watchers", max_watchers),
        ):
            if limit is not None and limit < 1:
                raise errors.ConstraintError(f"{name} must be at least 1 (or None), got {limit}")
        self.max_sessions = max_sessions
        self.max_variables = max_variables
        self.max_value_bytes = max_value_bytes
        self.max_watchers = max_watchers

    def check_sessions(self, count: int) -> None:
        """Raise if one more session would pass ``max_sessions``."""
        if self.max_sessions is not None and count >= self.max_sessions:
            raise exceeded(
                "open sessions",
                self.max_sessions,
                "close sessions you no longer need, or join an existing one by id",
            )

    def check_variables(self, count: int) -> None:
        """Raise if one more variable would pass ``max_variables``."""
        if self.max_variables is not None and count >= self.max_variables:
            raise exceeded(
                "variables per session", self.max_variables, "delete variables you no longer need"
            )

    def check_watchers(self, count: int) -> None:
        """Raise if one more watch would pass ``max_watchers``."""
        if self.max_watchers is not None and count >= self.max_watchers:
            raise exceeded(
                "watchers per session", self.max_watchers, "share one watch between consumers"
            )

    def check_value(self, spec: VariableSpec, value: Any, name: str) -> Any:
        """Return ``value`` if its encoded size is within ``max_value_bytes``."""
        if self.max_value_bytes is None or spec.type not in SIZED_TYPES:
            return value
        size = value_size(spec, value)
        if size > self.max_value_bytes:
            raise exceeded(
                f"value size of {name!r} ({size} bytes)",
                self.max_value_bytes,
                "store large data elsewhere and keep a reference in the variable",
            )
        return value
