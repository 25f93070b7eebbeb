"""Core: who is calling, carried in ContextVars so every layer and thread sees the same.

In-process, these default to this host and process. The store server sets them per call from
the request (authenticated principal, writer, lock-owner token), so the semantics in
:class:`LocalProvider` see the remote caller.
"""

from __future__ import annotations

import os
import socket
from contextvars import ContextVar

__all__ = ["current_lock_owner", "current_principal", "current_writer"]

current_writer: ContextVar[str] = ContextVar(
    "dspex_writer", default=f"{socket.gethostname()}:{os.getpid()}"
)
"""Who is writing: recorded as ``writer`` on each record."""

current_principal: ContextVar[str] = ContextVar("dspex_principal", default="")
"""The authenticated principal ("" without access control); it owns the sessions it creates."""

current_lock_owner: ContextVar[str | None] = ContextVar("dspex_lock_owner", default=None)
"""The secret token of the optimization locks this context holds (set by ``optimizing``)."""
