"""State providers, the session view, and (lazily) the session-store client.

The public names of ``dspex.state``; the code lives in sub-packages named for the side they run
on: ``core`` (in-process semantics), ``engines`` (storage), ``wire`` (shared by both ends of
the store protocol), ``server`` and ``client``. See docs/architecture.md.
"""

from __future__ import annotations

from dspex.state.client.connect import open_store
from dspex.state.core.context import SessionContext
from dspex.state.core.contract import StateProvider, UpdateResults
from dspex.state.core.identity import current_lock_owner, current_principal, current_writer
from dspex.state.core.semantics import LocalProvider
from dspex.state.core.watch import VariableWatch

SessionContext.connector = open_store

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
