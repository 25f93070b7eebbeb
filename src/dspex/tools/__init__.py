"""Layer 3: cross-process tools of a session (``@dspex.tool``) and their DSPy form.

A function decorated with :func:`tool` is registered in the current session and run by the
process that registered it; any process of the session lists it (``session.list_tools()``) and
calls it (``session.call_tool(name, arguments)`` or the returned :class:`SessionTool`), and
:meth:`SessionTool.as_dspy` hands it to ``dspy.ReAct``. Importing this package loads DSPy.
"""

from __future__ import annotations

from dspex.state.core.tool_model import ToolInfo
from dspex.tools._tool import SessionTool, tool

__all__ = ["SessionTool", "ToolInfo", "tool"]
