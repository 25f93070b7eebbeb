"""Layer 2: configurable store limits and the one function that reports hitting one."""

from __future__ import annotations

from dataclasses import dataclass

import dspex.errors as errors

__all__ = ["StoreLimits", "exceeded"]


@dataclass(frozen=True)
class StoreLimits:
    """Upper bounds a store enforces; ``None`` means unbounded.

    Attributes:
        max_sessions: open sessions in the store.
        max_variables: variables per session.
        max_value_bytes: encoded size of one value (JSON text or array bytes).
        history_size: versions kept per variable.
        max_watchers: concurrent watches per session.
        max_request_bytes: size of one request message (enforced by the gRPC server).
    """

    max_sessions: int | None = 10_000
    max_variables: int | None = 10_000
    max_value_bytes: int | None = 4 * 1024 * 1024
    history_size: int = 100
    max_watchers: int | None = 10_000
    max_request_bytes: int = 16 * 1024 * 1024


def exceeded(what: str, limit: int, hint: str) -> errors.LimitExceededError:
    """The error for reaching ``limit`` on ``what``; ``hint`` says what to do."""
    return errors.LimitExceededError(
        f"limit reached: {what} (limit {limit}); {hint}", limit=limit, what=what
    )
