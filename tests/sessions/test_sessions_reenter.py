"""One Session object entered with ``with`` from many threads and asyncio tasks at once."""

from __future__ import annotations

import asyncio
import threading

import pytest

import dspex
from dspex.errors import SessionClosedError, SessionError

THREADS = 8


def _enter_in_threads(session: dspex.Session) -> list[BaseException]:
    """Enter ``session`` in THREADS threads whose ``with`` blocks overlap; return failures."""
    barrier = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            with session as entered:
                assert entered is session
                assert dspex.current_session() is session
                barrier.wait(timeout=10)  # every thread is inside now
                session.set(f"thread_{index}", index)  # the session is usable inside
                assert session.get(f"thread_{index}") == index
        except BaseException as exc:  # collected and re-raised by the test
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return failures


def test_threads_enter_one_session_held_by_the_caller() -> None:
    with dspex.Session() as session:
        for index in range(THREADS):
            session.register(f"thread_{index}", int, -1)
        failures = _enter_in_threads(session)
        assert failures == []
        assert not session.closed  # the caller's block still holds it
        assert dspex.current_session() is session
    assert session.closed


def test_threads_enter_one_session_nobody_else_holds() -> None:
    session = dspex.Session()
    for index in range(THREADS):
        session.register(f"thread_{index}", int, -1)
    assert _enter_in_threads(session) == []
    assert session.closed  # the last block to leave closed it
    with pytest.raises(SessionError, match="no active dspex session"):
        dspex.current_session()


def test_asyncio_tasks_enter_one_session_and_interleave() -> None:
    async def task(session: dspex.Session, index: int, inside: asyncio.Event) -> int:
        with session:
            await asyncio.sleep(0.01 * index)  # leave in the order they entered (not LIFO)
            inside.set()
            assert dspex.current_session() is session
            return index

    async def main() -> list[int]:
        with dspex.Session() as session:
            inside = asyncio.Event()
            results = await asyncio.gather(*(task(session, i, inside) for i in range(THREADS)))
            assert dspex.current_session() is session
            assert not session.closed
        assert session.closed
        return list(results)

    assert asyncio.run(main()) == list(range(THREADS))


def test_nested_sessions_restore_the_outer_one_per_thread() -> None:
    with dspex.Session() as outer:
        inner = dspex.Session()
        seen: list[dspex.Session] = []

        def run() -> None:
            with outer:
                with inner:
                    seen.append(dspex.current_session())
                seen.append(dspex.current_session())

        thread = threading.Thread(target=run)
        with inner:
            thread.start()
            thread.join(timeout=10)
            assert dspex.current_session() is inner
        assert dspex.current_session() is outer
        assert seen == [inner, outer]
    assert inner.closed


def test_entering_a_closed_session_says_so() -> None:
    session = dspex.Session()
    with session:
        pass
    with pytest.raises(SessionClosedError, match="closed"), session:
        pass
