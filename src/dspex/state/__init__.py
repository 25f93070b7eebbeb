"""Layer 2: state providers, the session view, and (lazily) the session-store client."""

from __future__ import annotations

from dspex.state._context import SessionContext
from dspex.state._identity import current_lock_owner, current_principal, current_writer
from dspex.state._local import LocalProvider
from dspex.state._provider import StateProvider, UpdateResults
from dspex.state._watch import VariableWatch

__all__ = [
    "LocalProvider",
    "SessionContext",
    "StateProvider",
    "UpdateResults",
    "VariableWatch",
    "current_lock_owner",
    "current_principal",
    "current_writer",
]
