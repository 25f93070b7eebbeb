"""A write through one view is seen through every other, in both directions and across processes.

Views: the LocalProvider the server wraps, a SessionStoreProvider, a SessionContext over each,
and the cached SessionContext a worker gets from ``SessionContext.connect``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from support.bridge import (
    FLOAT,
    child_context_set,
    child_set,
    child_wait_for,
    spawn,
    wait_until,
)

from dspex.state import LocalProvider, SessionContext
from dspex.state.store import SessionStoreProvider, StoreServer

VIEWS = ["server_local", "client", "context_local", "context_client", "context_connect"]


class _View:
    def __init__(self, set_: Callable[[str, Any], Any], get: Callable[[str], Any]) -> None:
        self.set = set_
        self.get = get


def _provider_view(provider: Any, session_id: str) -> _View:
    return _View(
        lambda name, value: provider.set_variable(session_id, name, value),
        lambda name: provider.get_variable(session_id, name).value,
    )


def _context_view(context: SessionContext) -> _View:
    return _View(context.set, context.get)


@pytest.fixture(name="views")
def _views(
    local: LocalProvider, server: StoreServer, session_id: str
) -> Iterator[dict[str, _View]]:
    with ExitStack() as stack:
        client = SessionStoreProvider(server.address)
        stack.callback(client.close)
        connected = SessionContext.connect(server.address, session_id)
        stack.callback(connected.provider.close)
        yield {
            "server_local": _provider_view(local, session_id),
            "client": _provider_view(client, session_id),
            "context_local": _context_view(SessionContext(local, session_id)),
            "context_client": _context_view(SessionContext(client, session_id)),
            "context_connect": _context_view(connected),
        }


@pytest.mark.parametrize("reader", VIEWS)
@pytest.mark.parametrize("writer", VIEWS)
def test_a_write_through_one_view_is_seen_through_another(
    views: dict[str, _View], writer: str, reader: str
) -> None:
    views[reader].get("t")  # warm the reader (a cached reader starts following the session)
    views[writer].set("t", 1.25)
    assert wait_until(lambda: views[reader].get("t") == 1.25), (writer, reader)
    views[writer].set("t", 0.5)
    assert wait_until(lambda: views[reader].get("t") == 0.5), (writer, reader)


@pytest.mark.parametrize("child", [child_set, child_context_set])
@pytest.mark.parametrize("reader", VIEWS)
def test_a_write_from_a_spawned_process_is_seen_here(
    views: dict[str, _View], server: StoreServer, session_id: str, child: Any, reader: str
) -> None:
    views[reader].get("t")
    spawn(child, server.address, session_id, "t", 1.75)
    assert wait_until(lambda: views[reader].get("t") == 1.75), reader


@pytest.mark.parametrize("writer", VIEWS)
def test_a_write_here_is_seen_by_a_spawned_process(
    views: dict[str, _View], server: StoreServer, session_id: str, writer: str
) -> None:
    views[writer].set("t", 0.125)
    assert spawn(child_wait_for, server.address, session_id, "t", 0.125) == 0.125


def test_records_show_who_wrote(
    local: LocalProvider, server: StoreServer, session_id: str
) -> None:
    version, writer = spawn(child_set, server.address, session_id, "t", 0.3)
    assert local.get_variable(session_id, "t").writer == writer
    history = local.get_history(session_id, "t")
    assert history[-1].version == version and history[-1].writer == writer
    assert history[0].writer != writer  # the fixture registered it from this process


def test_session_registered_remotely_is_visible_locally(
    local: LocalProvider, client: SessionStoreProvider
) -> None:
    session_id = client.create_session("shared")
    client.register_variable(session_id, "x", FLOAT, 1.0)
    assert local.get_variable("shared", "x").value == 1.0
    local.register_variable("shared", "y", FLOAT, 0.5)
    assert [r.name for r in client.list_variables("shared")] == ["x", "y"]
