"""The live web dashboard of a session store (the optional extra ``dspex[dashboard]``).

A client of the store like any other: it lists sessions, follows each session's watch stream
and reads history and dependencies with its own token, so it shows exactly what that token
may observe. The page (served by :class:`Dashboard` through Starlette and uvicorn) gets every
change pushed as server-sent events, plots each variable's history and the optimizers'
progress with the plotly.js that the ``plotly`` package ships, and draws the dependency graph;
every script and style comes from the dashboard itself. With a token that may write (and
without ``read_only``), each variable offers a rollback.

Start it with ``dspex dashboard --store ADDRESS`` or ``dspex serve --dashboard-port N``, or
from Python with :func:`serve_dashboard` (foreground) or :class:`DashboardServer` (thread).
``import dspex`` never imports this package, Starlette, uvicorn or plotly.
"""

from __future__ import annotations

from dspex.dashboard._app import Dashboard
from dspex.dashboard._server import DashboardServer, serve_dashboard

__all__ = ["Dashboard", "DashboardServer", "serve_dashboard"]
