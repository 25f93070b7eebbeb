"""dspex: session-scoped, typed, watchable variables for DSPy programs.

Layer 3 public API. ``import dspex`` never imports grpc; a session store is loaded only when a
session needs one.
"""

from __future__ import annotations

import typing

from dspex import errors
from dspex._model import Choice, SessionInfo, VariableRecord, VariableSpec, VariableUpdate
from dspex.errors import DspexError
from dspex.session import Session, current_session
from dspex.state import LocalProvider, SessionContext, StateProvider, VariableWatch
from dspex.variables import Variable

if typing.TYPE_CHECKING:
    from dspex.binding import Published, bind, publish
    from dspex.program import Program
    from dspex.remote import Remote
    from dspex.sim import SimLM
    from dspex.tools import tool
    from dspex.tuning import compile, tune

__version__ = "0.1.0"

# Names whose modules subclass or build dspy classes (Program, SimLM, bind, tool), or load the
# worker-pool machinery (Remote) or Optuna (tune). They load on first access (PEP 562) so that
# `import dspex` stays light: importing dspy costs about a second and is not needed by sessions,
# variables, the store server or the CLI.
_DSPY_NAMES = {
    "Program": "dspex.program",
    "Remote": "dspex.remote",
    "SimLM": "dspex.sim",
    "compile": "dspex.tuning",
    "Published": "dspex.binding",
    "bind": "dspex.binding",
    "publish": "dspex.binding",
    "tool": "dspex.tools",
    "tune": "dspex.tuning",
}


def __getattr__(name: str) -> typing.Any:
    module_name = _DSPY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'dspex' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


__all__ = [
    "Choice",
    "DspexError",
    "LocalProvider",
    "Program",
    "Published",
    "Remote",
    "Session",
    "SessionContext",
    "SessionInfo",
    "SimLM",
    "StateProvider",
    "Variable",
    "VariableRecord",
    "VariableSpec",
    "VariableUpdate",
    "VariableWatch",
    "bind",
    "compile",
    "current_session",
    "errors",
    "publish",
    "tool",
    "tune",
]
