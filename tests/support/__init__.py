"""The one test-support package: helpers every test folder shares instead of copying them.

* :func:`wait_until` (poll a condition within a bound) and :func:`full_log` (a session's
  whole change log), here below;
* ``providers``: StateProvider kinds (transport x engine) for the contract suite;
* ``contract``: the StateProvider and hardening contracts every provider kind passes;
* ``engines``: engines of one kind on real storage, and a listener to wait on;
* ``redis_server``, ``serve_process``: a real redis-server and a real ``dspex serve``;
* ``ray_cluster``: a two-node Ray cluster started with the ``ray`` CLI;
* ``store_fixtures``: a store server, a client and a session, for a folder's conftest;
* ``session_fixtures``: clean DSPy settings and a fresh session, for a folder's conftest;
* ``binding``: an LM-call recorder for the DSPy binding tests;
* ``bridge``, ``hardening``, ``fuzz``, ``durability``, ``scaleout``: servers, clients, child
  processes and data for the store tests;
* ``faults``: acknowledged writes, byte surgery, skewed clocks and figures for tests/faults.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dspex._model import VariableUpdate
from dspex.state import StateProvider

__all__ = ["WAIT", "full_log", "wait_until"]

WAIT = 30.0
"""Seconds a test waits for something that should happen (a bound, not a speed requirement)."""


def wait_until(predicate: Callable[[], object], timeout: float = WAIT) -> bool:
    """Poll ``predicate`` every 10 ms until it holds or ``timeout`` passes; return whether it
    held (checked once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def full_log(provider: StateProvider, session_id: str) -> list[VariableUpdate]:
    """Every change of the session from revision 1 to its head, read with a resumed watch."""
    head = provider.get_session(session_id).revision
    updates: list[VariableUpdate] = []
    with provider.watch_variables(session_id, after_revision=0) as watch:
        while not updates or updates[-1].revision < head:
            update = watch.poll(WAIT)
            assert update is not None, f"the change log stopped at {updates[-1:]}, head {head}"
            updates.append(update)
    return updates
