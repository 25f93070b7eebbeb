"""A recompute callback that raises in the background leaves its variable stale, loudly, and the
recomputer goes on (issue 12).

``depend(..., recompute=fn)`` follows the session with a watch on a background thread. Before,
an exception from ``fn`` other than a dspex error ended that thread: the variable stayed stale
and nothing in the process recomputed anything again, with no word. Now the error is logged,
the record says it is stale, and the next change of another variable (its input) recomputes
it. Through a real
store on loopback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from support import wait_until
from support.bridge import WAIT
from support.serve_process import ServeProcess

import dspex
from dspex.errors import StoreUnavailableError
from dspex.state import LocalProvider, SessionContext
from dspex.state.store import StoreServer


def test_a_failing_recompute_is_logged_and_the_next_change_recomputes(
    server: StoreServer, caplog: pytest.LogCaptureFixture
) -> None:
    def double(values: Mapping[str, Any]) -> float:
        if values["base"] == 2.0:
            raise ZeroDivisionError("the user's recompute broke")
        return float(values["base"] * 2)

    with dspex.Session(server.address) as session:
        session.register("base", float, 1.0)
        session.register("double", float, 2.0)
        session.depend("base", "double", recompute=double)
        with caplog.at_level(logging.ERROR, logger="dspex.session"):
            session.set("base", 2.0)  # the callback raises on the recompute thread
            assert wait_until(lambda: "recomputing 'double' failed" in caplog.text, WAIT)
        assert session.variable("double").stale
        session.set("base", 3.0)
        # before the fix: the recompute thread was gone, 'double' stayed stale for good
        assert wait_until(
            lambda: session.get("double") == 6.0 and not session.variable("double").stale, WAIT
        )


def test_recomputing_goes_on_after_the_store_was_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the recompute thread ended with the watch the store's restart broke: the next
    change left its downstream stale for good, with no word."""
    store = ServeProcess("--data", str(tmp_path / "data"))
    with store, dspex.Session(store.address, session_id="recompute", create=True) as session:
        session.register("base", float, 1.0)
        session.register("double", float, 2.0)
        session.depend("base", "double", recompute=lambda values: values["base"] * 2)
        session.set("base", 2.0)
        assert wait_until(lambda: session.get("double") == 4.0, WAIT)
        with caplog.at_level(logging.WARNING, logger="dspex.session"):
            store.kill()
            store.start()  # same port, same data: the session is still there
            assert wait_until(lambda: _set(session, "base", 3.0), WAIT)
            assert wait_until(
                lambda: session.get("double") == 6.0 and not session.variable("double").stale,
                WAIT,
            )
        assert "recomputing for session recompute paused" in caplog.text


def _set(session: dspex.Session, name: str, value: float) -> bool:
    """One try of a set while the client finds the restarted store again."""
    try:
        session.set(name, value)
    except StoreUnavailableError:
        return False
    return True


class _FailingDependencies(LocalProvider):
    """The in-process store with one injected fault: its next ``failures`` reads of the
    dependency graph fail as a store call that timed out does."""

    failures = 0

    def get_dependencies(self, session_id: str) -> list[tuple[str, str]]:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailableError("injected fault: the call timed out")
        return super().get_dependencies(session_id)


def test_a_store_call_failing_mid_round_keeps_one_watch_and_retries_on_the_next_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, each such failure opened another watch and left the old one registered (a
    leak that used up ``max_watchers``, after which recomputing stopped without a word)."""
    store = _FailingDependencies(max_watchers=2)  # the recomputer's watch and one more
    session_id = store.create_session()
    view = SessionContext(store, session_id)
    view.register("a", "int", 1)
    view.register("b", "int", 2)
    view.depend("a", "b", recompute=lambda values: values["a"] * 2)
    with caplog.at_level(logging.WARNING, logger="dspex.session"):
        for value in (10, 11, 12):
            store.failures = 1
            view.set("a", value)
            assert wait_until(lambda: store.failures == 0, WAIT)
            assert wait_until(lambda: "trying again on the next change" in caplog.text, WAIT)
            caplog.clear()
        view.set("a", 100)
        assert wait_until(lambda: view.get("b") == 200, WAIT)
    with view.watch():  # before the fix: LimitExceededError, the leaked watches held the budget
        pass
    store.close()
