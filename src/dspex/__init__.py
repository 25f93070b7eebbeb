"""dspex: session-scoped, typed, watchable variables for DSPy programs.

Layer 3 public API. ``import dspex`` never imports grpc; a session store is loaded only when a
session needs one.
"""

from __future__ import annotations

from dspex import errors
from dspex._model import Choice, SessionInfo, VariableRecord, VariableSpec, VariableUpdate
from dspex.errors import DspexError
from dspex.session import Session, current_session
from dspex.state import LocalProvider, SessionContext, StateProvider, VariableWatch
from dspex.variables import Variable

__version__ = "0.1.0"

__all__ = [
    "Choice",
    "DspexError",
    "LocalProvider",
    "Session",
    "SessionContext",
    "SessionInfo",
    "StateProvider",
    "Variable",
    "VariableRecord",
    "VariableSpec",
    "VariableUpdate",
    "VariableWatch",
    "current_session",
    "errors",
]
