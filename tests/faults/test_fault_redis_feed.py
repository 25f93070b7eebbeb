"""A server that falls behind its Redis feed (issue 12, item 1): two ``--redis`` servers, one
paused with SIGSTOP while writes go through the other, and meanwhile the shared feed stream is
trimmed past them (what heavy traffic on other sessions does to its bounded length; here one
``XTRIM``). On waking up the paused server must catch up from the session's change log (when it
still holds the missed changes) or end its watchers with an explicit ``watch_lagged`` whose
``resume_from`` works or is refused explicitly; a read cache following it must catch up.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest
import redis
from support.faults import WAIT, record_figures
from support.redis_server import RedisServer
from support.serve_process import ServeProcess

from dspex import errors
from dspex._model import make_spec
from dspex.state.store import CachedProvider, SessionStoreProvider

INT = make_spec(int)
WRITES = 200
STALL = 2.0
"""Seconds the second server stays stopped."""


def _follow(watch: object, last: int, into: list[int]) -> errors.DspexError | None:
    """Poll ``watch`` into ``into`` until revision ``last`` arrives; the error that ended it."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            update = watch.poll(timeout=0.5)  # type: ignore[attr-defined]
        except errors.DspexError as exc:
            return exc
        if update is not None:
            into.append(update.revision)
            if update.revision >= last:
                return None
    raise AssertionError(f"no update {last} within {WAIT} s (got up to {into[-1:]})")


@pytest.mark.parametrize("log_size", ["50", "10000"])
def test_stalled_server_never_skips_updates_silently(tmp_path: Path, log_size: str) -> None:
    with RedisServer(tmp_path) as redis_server:
        _stall_one_of_two(redis_server, log_size)


def _stall_one_of_two(redis_server: RedisServer, log_size: str) -> None:
    prefix = f"feed-{uuid.uuid4().hex[:8]}"
    flags = ("--redis", redis_server.url, "--redis-prefix", prefix)
    flags += ("--log-size", log_size)
    with ServeProcess(*flags) as front, ServeProcess(*flags) as stalled:
        writer = SessionStoreProvider(front.address, timeout=10.0)
        reader = SessionStoreProvider(stalled.address, timeout=10.0)
        cache = CachedProvider(SessionStoreProvider(stalled.address, timeout=10.0))
        try:
            session_id = writer.create_session()
            first = writer.register_variable(session_id, "x", INT, 0).revision
            watch = reader.watch_variables(session_id, after_revision=first)
            assert cache.get_variable(session_id, "x").value == 0  # the cache follows it
            assert stalled.process is not None
            stalled.process.send_signal(signal.SIGSTOP)
            try:
                last = first
                for value in range(1, WRITES):
                    writer.set_variable(session_id, "x", value)
                admin = redis.Redis(port=redis_server.port)
                admin.xtrim(f"{prefix}:feed", maxlen=0)
                admin.close()
                time.sleep(STALL)
            finally:
                stalled.process.send_signal(signal.SIGCONT)
            last = writer.set_variable(session_id, "x", WRITES).revision
            received: list[int] = []
            ended = _follow(watch, last, received)
            assert received == list(range(first + 1, first + 1 + len(received)))  # in order
            if ended is not None:  # explicit, with a resume point that works or is refused
                assert isinstance(ended, errors.WatchLaggedError | errors.StoreUnavailableError)
                resume_from = ended.details.get("resume_from", received[-1] if received else first)
                assert resume_from == (received[-1] if received else first), ended
                try:
                    again = reader.watch_variables(session_id, after_revision=resume_from)
                except errors.WatchLaggedError as refused:
                    assert "include_initial" in str(refused)  # re-read, then watch again
                else:
                    rest: list[int] = []
                    assert _follow(again, last, rest) is None
                    assert rest == list(range(resume_from + 1, last + 1))
            _until_cached(cache, session_id, WRITES)
            record_figures(
                f"redis_feed_stall_log_{log_size}", writes=WRITES, stall_s=STALL,
                received_in_order=len(received), ended=type(ended).__name__ if ended else None,
                lost_silently=0,
            )  # fmt: skip
        finally:
            writer.close()
            reader.close()
            cache.close()


def _until_cached(cache: CachedProvider, session_id: str, value: int) -> None:
    deadline = time.monotonic() + WAIT
    while (seen := cache.get_variable(session_id, "x").value) != value:
        assert time.monotonic() < deadline, f"the cache still serves {seen}, not {value}"
        time.sleep(0.1)
