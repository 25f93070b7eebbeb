"""dspex.Session: the session verbs, current_session(), nesting, and ContextVar propagation."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support.serve_process import ServeProcess

import dspex
from dspex import errors
from dspex.state import LocalProvider


def in_thread(target: Any) -> Any:
    """Run ``target`` on a fresh plain thread and return its result (or raise its error)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = target()
        except BaseException as exc:  # handed back to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_no_session_is_current_outside_a_with_block() -> None:
    with pytest.raises(errors.SessionError, match=r"with dspex\.Session\(\)"):
        dspex.current_session()


def test_session_is_local_by_default() -> None:
    with dspex.Session() as session:
        assert session.backend == "local"
        assert isinstance(session.provider, LocalProvider)
        assert isinstance(session.session_id, str) and session.session_id
        assert dspex.current_session() is session
        assert repr(session) == f"Session(session_id={session.session_id!r}, backend='local')"


def test_session_verbs_round_trip() -> None:
    with dspex.Session() as session:
        record = session.register("temperature", float, 0.7, min=0.0, max=2.0)
        assert (record.version, record.value) == (1, 0.7)
        assert session.register("temperature", float, 0.1, min=0.0, max=2.0) == record
        assert session.get("temperature") == 0.7
        assert session.set("temperature", 0.2).version == 2
        assert session.variable("temperature").value == 0.2
        session.register("instructions", str, "Be brief.", metadata={"owner": "me"})
        assert session.variable("instructions").metadata == {"owner": "me"}
        assert [r.name for r in session.list()] == ["instructions", "temperature"]
        assert [r.name for r in session.list("temp*")] == ["temperature"]
        assert [r.value for r in session.history("temperature")] == [0.7, 0.2]
        assert [r.value for r in session.history("temperature", limit=1)] == [0.2]
        rolled = session.rollback("temperature", 1)
        assert (rolled.value, rolled.version) == (0.7, 3)
        session.delete("instructions")
        with pytest.raises(errors.VariableNotFoundError):
            session.get("instructions")


def test_set_refuses_bad_value_and_stale_version() -> None:
    with dspex.Session() as session:
        session.register("temperature", float, 0.7, min=0.0, max=2.0)
        with pytest.raises(errors.VariableValueError, match=r"'temperature'.*3\.5.*max=2\.0"):
            session.set("temperature", 3.5)
        with pytest.raises(errors.VersionConflictError):
            session.set("temperature", 0.5, expected_version=7)
        assert session.variable("temperature").version == 1


def test_update_is_atomic_by_default_and_names_the_failure() -> None:
    with dspex.Session() as session:
        session.register("a", float, 0.1, max=1.0)
        session.register("b", float, 0.1, max=1.0)
        with pytest.raises(errors.BatchUpdateError) as caught:
            session.update({"a": 0.5, "b": 5.0})
        message = str(caught.value)
        assert "nothing was applied" in message
        assert "b: variable 'b': value 5.0 breaks rule max=1.0" in message
        assert set(caught.value.results) == {"a", "b"}
        assert session.get("a") == 0.1
        results = session.update({"a": 0.5, "b": 0.6})
        assert {name: r.value for name, r in results.items()} == {"a": 0.5, "b": 0.6}


def test_update_non_atomic_applies_the_valid_names_then_raises() -> None:
    with dspex.Session() as session:
        session.register("a", float, 0.1, max=1.0)
        session.register("b", float, 0.1, max=1.0)
        with pytest.raises(errors.BatchUpdateError, match="the other names were applied"):
            session.update({"a": 0.5, "b": 5.0}, atomic=False)
        assert session.get("a") == 0.5
        assert session.get("b") == 0.1


def test_update_with_stale_expected_versions_applies_nothing() -> None:
    with dspex.Session() as session:
        session.register("a", float, 0.1)
        with pytest.raises(errors.BatchUpdateError, match=r"expected"):
            session.update({"a": 0.5}, expected_versions={"a": 3})
        assert session.get("a") == 0.1


def test_watch_verb_delivers_changes() -> None:
    with dspex.Session() as session:
        session.register("a", float, 0.1)
        with session.watch("a", initial=True) as updates:
            assert updates.poll(timeout=5).kind == "initial"  # type: ignore[union-attr]
            session.set("a", 0.2)
            update = updates.poll(timeout=5)
            assert update is not None and update.record.value == 0.2
        with session.watch(after_revision=1) as replay:
            assert replay.poll(timeout=5).revision == 2  # type: ignore[union-attr]


def test_session_closes_on_exit() -> None:
    with dspex.Session() as session:
        session.register("a", float, 0.1)
    assert session.closed
    with pytest.raises(errors.SessionClosedError):
        session.get("a")
    with pytest.raises(errors.SessionError):
        dspex.current_session()


def test_nested_sessions_restore_the_outer_one() -> None:
    with dspex.Session() as outer:
        with dspex.Session() as inner:
            assert dspex.current_session() is inner
            assert inner.session_id != outer.session_id
        assert dspex.current_session() is outer
        assert inner.closed and not outer.closed


def test_reentering_the_same_session_closes_it_only_at_the_outer_exit() -> None:
    session = dspex.Session()
    with session:
        with session:
            assert dspex.current_session() is session
        assert not session.closed
        assert dspex.current_session() is session
    assert session.closed


def test_sessions_on_a_shared_provider_and_joining_by_id() -> None:
    provider = LocalProvider()
    with dspex.Session(provider) as owner:
        owner.register("a", float, 0.1)
        with dspex.Session(provider, session_id=owner.session_id) as joined:
            assert joined.backend == "local"
            assert joined.get("a") == 0.1
            joined.set("a", 0.3)
        # Leaving a joined session does not close the session it joined.
        assert owner.get("a") == 0.3
    with pytest.raises(errors.SessionClosedError):
        provider.get_session(owner.session_id)
    # The provider was passed in, so the session did not close it: it still serves sessions.
    assert provider.get_session(provider.create_session()).revision == 0


def test_joining_an_unknown_session_raises() -> None:
    with pytest.raises(errors.SessionNotFoundError, match="nope"):
        dspex.Session(LocalProvider(), session_id="nope")


def test_unknown_store_address_raises_session_error() -> None:
    with pytest.raises(errors.SessionError, match="grpc://HOST:PORT"):
        dspex.Session("http://localhost:1")


def test_plain_threads_do_not_inherit_the_session() -> None:
    with dspex.Session(), pytest.raises(errors.SessionError):
        in_thread(dspex.current_session)


def test_threads_run_with_copy_context_see_the_session() -> None:
    with dspex.Session() as session:
        session.register("a", float, 0.4)
        context = contextvars.copy_context()
        assert in_thread(lambda: context.run(dspex.current_session)) is session
        assert in_thread(lambda: context.run(lambda: dspex.current_session().get("a"))) == 0.4


def test_executor_threads_with_copied_context_see_their_own_session() -> None:
    def read() -> str:
        return dspex.current_session().session_id

    with ThreadPoolExecutor(max_workers=2) as pool, dspex.Session() as first:
        first_future = pool.submit(contextvars.copy_context().run, read)
        with dspex.Session() as second:
            second_future = pool.submit(contextvars.copy_context().run, read)
            assert second_future.result(timeout=10) == second.session_id
        assert first_future.result(timeout=10) == first.session_id


def test_asyncio_tasks_inherit_the_session() -> None:
    async def main() -> list[str]:
        async def read() -> str:
            await asyncio.sleep(0)
            return dspex.current_session().session_id

        with dspex.Session() as session:
            ids = await asyncio.gather(read(), read())
            return [*ids, session.session_id]

    *seen, expected = asyncio.run(main())
    assert seen == [expected, expected]


def test_dspy_threads_see_the_session_through_dspy_context() -> None:
    dspy = pytest.importorskip("dspy")
    from dspy.utils.parallelizer import ParallelExecutor

    with dspex.Session() as session:
        session.register("a", float, 0.4)
        assert dspy.settings.get("dspex_session") is session
        executor = ParallelExecutor(num_threads=2, disable_progress_bar=True)
        seen = executor.execute(lambda _: dspex.current_session().get("a"), [1, 2, 3])
    assert seen == [0.4, 0.4, 0.4]
    assert dspy.settings.get("dspex_session") is None


def test_dspy_configure_inside_a_session_is_seen() -> None:
    """The session joins DSPy's overlay without freezing the global settings under it."""
    import dspy
    from dspy.utils import DummyLM

    with dspex.Session() as session:
        dspy.configure(lm=DummyLM([{"answer": "configured inside"}]))
        try:
            answer = dspy.Predict("question -> answer")(question="hi").answer
            assert answer == "configured inside"
            assert dspy.settings.get("dspex_session") is session
        finally:
            dspy.configure(lm=None)
    assert dspy.settings.get("dspex_session") is None


def test_a_bare_host_port_reaches_the_store_as_the_cli_and_connect_take_it() -> None:
    with ServeProcess() as server:
        bare = server.address.removeprefix("grpc://")
        with dspex.Session(bare) as shared:
            shared.register("temperature", float, 0.3)
            assert shared.get("temperature") == 0.3
            assert shared.address == server.address
