"""Live watches of one store client share one server stream per session, each with its own
filter, queue, cancel and end."""

from __future__ import annotations

import pytest
from support import wait_until
from support.bridge import WAIT, served

from dspex._model import make_spec
from dspex.errors import StoreUnavailableError
from dspex.state import LocalProvider
from dspex.state.core.watch import VariableWatch
from dspex.state.store import SessionStoreProvider

INT = make_spec(int)


def _values(watch: VariableWatch, count: int) -> list[tuple[str, int]]:
    got = []
    for _ in range(count):
        update = watch.poll(timeout=WAIT)
        assert update is not None, f"only {got} arrived"
        got.append((update.name, update.record.value))
    return got


@pytest.mark.timeout(120)
def test_local_watches_share_one_stream_each_with_its_own_filter() -> None:
    local = LocalProvider()
    sid = local.create_session()
    local.register_variable(sid, "a", INT, 0)
    local.register_variable(sid, "b", INT, 0)
    with served(local) as server:
        client = SessionStoreProvider(server.address)
        try:
            every = [client.watch_variables(sid) for _ in range(3)]
            only_a = client.watch_variables(sid, ["a"])
            only_b = client.watch_variables(sid, ["b"])
            assert wait_until(lambda: server.watch_count == 1)
            for value in range(1, 4):
                client.set_variable(sid, "a", value)
                client.set_variable(sid, "b", -value)
            expected = [(n, v) for value in range(1, 4) for n, v in (("a", value), ("b", -value))]
            for watch in every:
                assert _values(watch, 6) == expected
            assert _values(only_a, 3) == [("a", 1), ("a", 2), ("a", 3)]
            assert _values(only_b, 3) == [("b", -1), ("b", -2), ("b", -3)]
            every[0].cancel()
            only_a.cancel()
            client.set_variable(sid, "a", 9)
            client.set_variable(sid, "b", -9)
            for watch in every[1:]:
                assert _values(watch, 2) == [("a", 9), ("b", -9)]
            assert _values(only_b, 1) == [("b", -9)]
            assert server.watch_count == 1
            for watch in (*every[1:], only_b):
                watch.cancel()
            assert wait_until(lambda: server.watch_count == 0)
        finally:
            client.close()


@pytest.mark.timeout(120)
def test_a_joining_watch_sees_only_updates_after_it_was_opened() -> None:
    local = LocalProvider()
    sid = local.create_session()
    local.register_variable(sid, "a", INT, 0)
    with served(local) as server:
        client = SessionStoreProvider(server.address)
        try:
            first = client.watch_variables(sid)
            client.set_variable(sid, "a", 1)
            second = client.watch_variables(sid)  # joins the open stream
            client.set_variable(sid, "a", 2)
            dedicated = client.watch_variables(sid, include_initial=True)
            assert server.watch_count == 2  # include_initial keeps a stream of its own
            assert _values(first, 2) == [("a", 1), ("a", 2)]
            assert _values(second, 1) == [("a", 2)]
            assert second.poll(timeout=0.3) is None
            assert _values(dedicated, 1) == [("a", 2)]
            for watch in (first, second, dedicated):
                watch.cancel()
        finally:
            client.close()


@pytest.mark.timeout(120)
def test_losing_the_shared_stream_ends_every_watch_with_its_resume_point() -> None:
    local = LocalProvider()
    sid = local.create_session()
    local.register_variable(sid, "a", INT, 0)
    local.register_variable(sid, "b", INT, 0)
    server_cm = served(local)
    server = server_cm.__enter__()
    client = SessionStoreProvider(server.address)
    try:
        only_a = client.watch_variables(sid, ["a"])
        only_b = client.watch_variables(sid, ["b"])
        client.set_variable(sid, "a", 1)
        client.set_variable(sid, "b", 2)
        assert _values(only_a, 1) == [("a", 1)]
        assert _values(only_b, 1) == [("b", 2)]
        head = local.get_session(sid).revision
        server_cm.__exit__(None, None, None)
        for watch in (only_a, only_b):
            with pytest.raises(StoreUnavailableError, match="after_revision") as caught:
                while watch.poll(timeout=WAIT) is not None:
                    pass
            assert caught.value.resume_from == head
    finally:
        client.close()
