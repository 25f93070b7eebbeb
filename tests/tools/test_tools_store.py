"""Tools through a real session store: two session views (owner, caller) over loopback gRPC.

The owner's view runs the tools; the caller's view reaches them only through the store's
ToolStore service (the caller does not own them). Process boundaries are covered in
``test_tools_processes.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pydantic
import pytest
from support import wait_until

import dspex
from dspex.errors import (
    LimitExceededError,
    StoreProtocolError,
    StoreUnavailableError,
    ToolArgumentsError,
    ToolError,
    ToolExistsError,
    ToolNotFoundError,
    ToolTimeoutError,
    ToolUnavailableError,
    UnauthenticatedError,
)
from dspex.state import LocalProvider
from dspex.state.store import SessionStoreProvider, StoreLimits, StoreServer


class Reading(pydantic.BaseModel):
    city: str
    celsius: float


@pytest.fixture
def owner(store: StoreServer) -> Iterator[dspex.Session]:
    with dspex.Session(store.address) as session:
        yield session


@pytest.fixture
def caller(store: StoreServer, owner: dspex.Session) -> Iterator[dspex.Session]:
    # A plain view of the same session (not entered: the owner stays current for @dspex.tool).
    view = dspex.Session(store.address, session_id=owner.session_id)
    yield view
    view.close()


def test_the_caller_lists_and_calls_the_owners_tools_as_json(
    owner: dspex.Session, caller: dspex.Session
) -> None:
    ran: list[str] = []

    @dspex.tool
    def measure(city: str, when: tuple[int, int] = (0, 0)) -> Reading:
        """Measure the temperature."""
        ran.append(city)
        return Reading(city=city, celsius=21.5)

    [info] = caller.list_tools()
    assert (info.name, info.description, info.connected) == (
        "measure",
        "Measure the temperature.",
        True,
    )
    assert info.owner == owner.list_tools()[0].owner
    assert info.parameters == measure.parameters
    assert caller.call_tool("measure", {"city": "Oslo"}) == {"city": "Oslo", "celsius": 21.5}
    assert measure(city="Bergen") == Reading(city="Bergen", celsius=21.5)  # owner: direct
    assert ran == ["Oslo", "Bergen"]


def test_a_raising_tool_reaches_the_caller_with_type_and_traceback(
    owner: dspex.Session, caller: dspex.Session
) -> None:
    @dspex.tool
    def parse_age(text: str) -> int:
        """Parse an age."""
        return int(text)

    with pytest.raises(
        ToolError, match=r"tool 'parse_age' raised ValueError: invalid literal"
    ) as e:
        caller.call_tool("parse_age", {"text": "old"})
    error = e.value
    assert type(error) is ToolError
    assert error.error_type == "ValueError"
    assert (error.tool, error.owner) == ("parse_age", owner.list_tools()[0].owner)
    assert "in parse_age" in error.remote_traceback
    assert "return int(text)" in error.remote_traceback


def test_wrong_arguments_through_the_store_are_refused_before_the_tool_runs(
    owner: dspex.Session, caller: dspex.Session
) -> None:
    ran: list[int] = []

    @dspex.tool
    def repeat(text: str, times: int) -> str:
        """Repeat text."""
        ran.append(times)
        return text * times

    with pytest.raises(ToolArgumentsError) as caught:
        caller.call_tool("repeat", {"text": "a", "times": "2", "extra": 1})
    message = str(caught.value)
    assert message.startswith("tool 'repeat' called with wrong arguments")
    assert "argument 'times': '2' is not of type 'integer'" in message
    assert "unknown argument 'extra'" in message
    with pytest.raises(ToolArgumentsError, match="missing required argument 'times'"):
        caller.call_tool("repeat", {"text": "a"})
    with pytest.raises(ToolArgumentsError, match="cannot be sent as JSON"):
        caller.call_tool("repeat", {"text": object(), "times": 1})
    assert ran == []
    assert caller.call_tool("repeat", {"text": "ab", "times": 2}) == "abab"


def test_an_unknown_tool_through_the_store_lists_the_known_ones(
    owner: dspex.Session, caller: dspex.Session
) -> None:
    @dspex.tool
    def known() -> str:
        """Known."""
        return "yes"

    with pytest.raises(ToolNotFoundError, match=r"no tool named 'nope'.*known tools: known"):
        caller.call_tool("nope")


def test_a_result_that_is_not_json_is_a_clear_error(
    owner: dspex.Session, caller: dspex.Session
) -> None:
    @dspex.tool
    def handle() -> object:
        """Return something that is not data."""
        return threading.Lock()

    with pytest.raises(ToolError, match=r"returned a value that cannot be sent as JSON"):
        caller.call_tool("handle")


def test_a_slow_owner_gives_a_timeout_error(owner: dspex.Session, caller: dspex.Session) -> None:
    release = threading.Event()

    @dspex.tool(timeout=0.3)
    def stuck() -> str:
        """Wait to be released."""
        release.wait(30)
        return "late"

    try:
        with pytest.raises(ToolTimeoutError, match=r"tool 'stuck' .* did not answer within 0.3 s"):
            caller.call_tool("stuck", timeout=0.3)
        # The handle uses the current session, and its own timeout.
        with pytest.raises(TimeoutError), caller:
            stuck()
    finally:
        release.set()


def test_closing_the_caller_ends_its_wait_for_a_tool_and_says_so(
    owner: dspex.Session, caller: dspex.Session
) -> None:
    started, release = threading.Event(), threading.Event()

    @dspex.tool
    def stuck() -> str:
        """Wait to be released."""
        started.set()
        release.wait(30)
        return "late"

    failures: list[BaseException] = []

    def call() -> None:
        try:
            caller.call_tool("stuck")  # no timeout: waits for the owner
        except BaseException as exc:
            failures.append(exc)

    waiting = threading.Thread(target=call, daemon=True)
    try:
        waiting.start()
        assert started.wait(10)  # the call reached the owner: the caller waits for it
        caller.close()
        waiting.join(10)
        assert not waiting.is_alive()
    finally:
        release.set()
    [failure] = failures
    assert isinstance(failure, StoreUnavailableError)
    assert "was closed during the call" in str(failure) and "unreachable" not in str(failure)


def test_tools_stop_being_served_with_a_warning_when_their_provider_is_closed(
    store: StoreServer, caplog: pytest.LogCaptureFixture
) -> None:
    provider = SessionStoreProvider(store.address)
    session = dspex.Session(provider)  # the session does not own the provider: its caller does
    try:
        session.register_tool("echo", lambda arguments: "hi")
        assert session.call_tool("echo") == "hi"
        with caplog.at_level(logging.WARNING, logger="dspex.tools"):
            provider.close()  # the tools' stream shares its channel
            assert wait_until(lambda: not _threads("dspex-tool-serving"))
        assert "are no longer served: the client of session store" in caplog.text
    finally:
        session.close()  # before the fix: ValueError (a call on the closed channel)


def _threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


def test_closing_the_owner_removes_its_tools(store: StoreServer) -> None:
    with dspex.Session(store.address) as owner:
        caller = dspex.Session(store.address, session_id=owner.session_id)
        try:
            with dspex.Session(store.address, session_id=owner.session_id) as helper:

                @dspex.tool
                def helper_tool() -> str:
                    """Owned by the helper view."""
                    return "helper"

                assert caller.call_tool("helper_tool") == "helper"
            with pytest.raises(ToolNotFoundError, match="known tools: none"):
                caller.call_tool("helper_tool")
            assert helper.closed
        finally:
            caller.close()


def test_a_name_held_by_another_connected_owner_is_refused(
    store: StoreServer, owner: dspex.Session, caller: dspex.Session
) -> None:
    @dspex.tool(name="shared")
    def mine() -> str:
        """Mine."""
        return "owner"

    with pytest.raises(
        ToolExistsError, match=r"'shared' is already registered .* still connected"
    ):
        caller.register_tool("shared", lambda arguments: "caller")
    assert caller.call_tool("shared") == "owner"
    assert [t.name for t in caller.list_tools()] == ["shared"]


def test_the_owner_serves_again_after_the_store_restarts() -> None:
    provider = LocalProvider()
    server = StoreServer.start(provider, "127.0.0.1:0")
    port = server.address.removeprefix("grpc://")
    owner = dspex.Session(server.address)
    caller = dspex.Session(server.address, session_id=owner.session_id)
    try:
        owner.register_tool("ping", lambda arguments: "pong")
        assert caller.call_tool("ping") == "pong"
        server.stop(grace=0.2)
        server = StoreServer.start(provider, port)  # same sessions, an empty tool table
        assert wait_until(lambda: _listed(caller) == ["ping"])
        assert caller.call_tool("ping") == "pong"
    finally:
        caller.close()
        owner.close()
        server.stop(grace=0.2)
        provider.close()


def _listed(session: dspex.Session) -> list[str]:
    try:
        return [t.name for t in session.list_tools() if t.connected]
    except dspex.errors.StoreError:
        return []  # the store is still starting


def test_tools_of_a_promoted_session_are_served_from_the_embedded_store(
    session: dspex.Session,
) -> None:
    @dspex.tool
    def before(x: int) -> int:
        """Registered before promotion."""
        return x + 1

    address = session.promote()
    view = dspex.Session(address, session_id=session.session_id, token=session.store_token)
    try:
        assert [t.name for t in view.list_tools()] == ["before"]
        assert view.call_tool("before", {"x": 1}) == 2

        @dspex.tool
        def after(x: int) -> int:
            """Registered after promotion."""
            return x * 10

        assert view.call_tool("after", {"x": 2}) == 20
        assert before(x=5) == 6  # the owner still calls its own tools directly
    finally:
        view.close()


def test_the_store_refuses_callers_without_the_token() -> None:
    provider = LocalProvider()
    server = StoreServer.start(provider, "127.0.0.1:0", token="secret")
    try:
        with dspex.Session(server.address, token="secret") as owner:
            owner.register_tool("guarded", lambda arguments: "ok")
            stranger = dspex.Session(server.address, session_id=owner.session_id, token="secret")
            try:
                assert stranger.call_tool("guarded") == "ok"
            finally:
                stranger.close()
            from dspex.state.client.tools import ToolStoreClient

            anonymous = ToolStoreClient(server.address)
            try:
                with pytest.raises(UnauthenticatedError):
                    anonymous.list_tools(owner.session_id)
                with pytest.raises(UnauthenticatedError):
                    anonymous.call_tool(owner.session_id, "guarded", "{}", 5.0)
            finally:
                anonymous.close()
    finally:
        server.stop(grace=0.2)
        provider.close()


def test_payload_limits_and_malformed_requests_are_clear_errors() -> None:
    provider = LocalProvider()
    server = StoreServer.start(provider, "127.0.0.1:0", limits=StoreLimits(max_value_bytes=1000))
    try:
        with dspex.Session(server.address) as owner:
            owner.register_tool("echo", lambda arguments: arguments["text"])
            caller = dspex.Session(server.address, session_id=owner.session_id)
            try:
                with pytest.raises(
                    LimitExceededError, match=r"arguments of a call to tool 'echo'"
                ):
                    caller.call_tool("echo", {"text": "x" * 2000})
                assert caller.call_tool("echo", {"text": "x" * 100}) == "x" * 100
                from dspex.state.client.tools import ToolStoreClient
                from dspex.state.wire.tools import ToolSpecText

                raw = ToolStoreClient(server.address)
                try:
                    with pytest.raises(StoreProtocolError, match="not a JSON object"):
                        raw.register_tool(
                            owner.session_id, "someone", ToolSpecText("bad", "", "[1, 2]")
                        )
                    with pytest.raises(StoreProtocolError, match="timeout must be"):
                        raw.call_tool(owner.session_id, "echo", "{}", -1.0)
                finally:
                    raw.close()
            finally:
                caller.close()
    finally:
        server.stop(grace=0.2)
        provider.close()


def test_calls_to_a_disconnected_owner_fail_at_once_naming_tool_and_owner(
    store: StoreServer,
) -> None:
    with dspex.Session(store.address) as first:
        caller = dspex.Session(store.address, session_id=first.session_id)
        try:
            first.register_tool("gone", lambda arguments: "here")
            owner_id = first.list_tools()[0].owner
            serving = first._tool_table()._serving
            assert serving is not None
            serving.stop()  # the stream ends as if the process died (its tools stay listed)
            assert wait_until(lambda: not caller.list_tools()[0].connected)
            with pytest.raises(ToolUnavailableError) as caught:
                caller.call_tool("gone")
            assert f"tool 'gone' cannot run: its owner {owner_id} is not connected" in str(
                caught.value
            )
        finally:
            caller.close()
