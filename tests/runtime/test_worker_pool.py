"""Layer 1: WorkerPool against real spawned worker processes.

No mocks: every test starts real ``spawn`` workers running targets from ``pool_targets``.
Crashes are real (``os._exit``, ``kill -9``), timeouts kill real processes, and shutdown is
checked against ``/proc``. Concurrency is asserted on recorded intervals, never wall-clock
thresholds.
"""

from __future__ import annotations

import functools
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pool_targets
import pytest

from dspex.errors import WorkerCrashedError, WorkerError, WorkerSetupError, WorkerTimeoutError
from dspex.runtime import RemoteTraceback, WorkerPool, remote_traceback
from dspex.runtime._pickling import dumps

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    """Two ready workers shared by the tests that leave them healthy and idle."""
    with WorkerPool(pool_targets.echo_setup, workers=2) as shared:
        yield shared


def _gone(pid: int) -> bool:
    """True once ``pid`` is neither running nor a zombie (fully reaped)."""
    return not Path(f"/proc/{pid}").exists()


def _wait_for(path: Path, seconds: float = 60.0) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


# ---- results, ordering, concurrency ----------------------------------------------------------


def test_map_returns_results_in_input_order_and_reports_progress(pool: WorkerPool) -> None:
    # Earlier payloads sleep longer, so completion order differs from input order.
    payloads = [("sleep", 0.05 * (6 - i), i) for i in range(6)]
    seen: list[tuple[int, int]] = []
    results = pool.map(payloads, progress=lambda done, total: seen.append((done, total)))
    assert results == list(range(6))
    assert seen == [(done, 6) for done in range(7)]


def test_call_returns_the_handler_result(pool: WorkerPool) -> None:
    assert pool.call({"question": "q", "n": [1, 2]}) == {"question": "q", "n": [1, 2]}


def test_setup_runs_once_per_worker(pool: WorkerPool) -> None:
    answers = pool.map([("setup_calls",)] * 8)
    assert {calls for calls, _ in answers} == {1}
    assert {pid for _, pid in answers} <= set(pool.pids)


def test_two_workers_run_two_calls_at_the_same_time(pool: WorkerPool) -> None:
    first = pool.submit(("interval", 1.0))
    second = pool.submit(("interval", 1.0))
    (start1, end1, pid1), (start2, end2, pid2) = first.result(60), second.result(60)
    assert pid1 != pid2
    assert max(start1, start2) < min(end1, end2), "the two calls did not overlap"


@pytest.mark.slow
def test_workers_do_not_read_the_parent_stdin() -> None:
    if not Path("/proc/self/fd/0").exists():
        pytest.skip("needs /proc")
    read_end, write_end = os.pipe()
    os.write(write_end, b"secret")
    saved_stdin = os.dup(0)
    os.dup2(read_end, 0)  # the parent's stdin is now a pipe holding data
    try:
        single = WorkerPool(pool_targets.echo_setup, workers=1)
    finally:
        os.dup2(saved_stdin, 0)
        for fd in (saved_stdin, read_end, write_end):
            os.close(fd)
    with single:
        target, data = single.call(("stdin",))
    assert target == os.devnull
    assert data == ""


def test_no_collection_runs_while_a_map_hands_out_its_calls(pool: WorkerPool) -> None:
    """A collection due in the middle of a map runs after its last call was sent."""
    started: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter_ns())

    pool_targets.PICKLED.clear()
    thresholds = gc.get_threshold()
    gc.callbacks.append(record)
    gc.set_threshold(1, 1, 1)  # due at nearly every allocation
    try:
        results = pool.map([pool_targets.Stamped(i) for i in range(40)])
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(record)
    assert results == list(range(40))
    first, last = pool_targets.PICKLED[0], pool_targets.PICKLED[-1]
    assert len(pool_targets.PICKLED) == 40
    assert [at for at in started if at > last], "no collection ran after the sends"
    assert not [at for at in started if first <= at <= last]


def test_a_maps_payload_iterator_runs_with_the_collector_on(pool: WorkerPool) -> None:
    """Only the sends are held: the caller's generator (its code, its garbage) is not."""
    enabled: list[bool] = []

    def payloads() -> Iterator[int]:
        for value in range(4):
            enabled.append(gc.isenabled())
            yield value

    assert gc.isenabled()
    assert pool.map(payloads()) == [0, 1, 2, 3]
    assert enabled == [True] * 4  # before: False, the collector was held around the generator
    assert gc.isenabled()


def test_map_return_exceptions_keeps_failures_in_place(pool: WorkerPool) -> None:
    results = pool.map([("sleep", 0, "a"), ("value_error", "nope"), 3], return_exceptions=True)
    assert results[0] == "a" and results[2] == 3
    assert isinstance(results[1], ValueError) and str(results[1]) == "nope"


def test_map_raises_the_first_failure(pool: WorkerPool) -> None:
    with pytest.raises(ValueError, match="item 2 is bad"):
        pool.map([1, ("value_error", "item 2 is bad"), 3])
    assert pool.call(4) == 4


def test_large_payloads_and_results_cross_intact(pool: WorkerPool) -> None:
    blob = os.urandom(4_000_000)
    assert pool.map([blob, ("sleep", 0, blob[::-1])]) == [blob, blob[::-1]]


def test_many_threads_submitting_at_once_get_their_own_results(pool: WorkerPool) -> None:
    results: dict[int, list[Any]] = {}

    def client(n: int) -> None:
        results[n] = [pool.call([n, i]) for i in range(15)]

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {n: [[n, i] for i in range(15)] for n in range(6)}


def test_done_callbacks_may_call_back_into_the_pool(pool: WorkerPool) -> None:
    chained: list[Any] = []
    done = threading.Event()

    def follow_up(_: Any) -> None:
        pool.submit(2).add_done_callback(
            lambda second: (chained.append(second.result()), done.set())
        )

    pool.submit(1).add_done_callback(follow_up)
    assert done.wait(60)
    assert chained == [2]


# ---- exceptions and pickling -----------------------------------------------------------------


def test_handler_exception_reraises_with_its_type_and_remote_traceback(pool: WorkerPool) -> None:
    with pytest.raises(ValueError, match="temperature too high") as caught:
        pool.call(("value_error", "temperature too high"))
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    text = remote_traceback(caught.value)
    assert text is not None
    assert "pool_targets.py" in text and "_raise_value_error" in text
    assert "ValueError: temperature too high" in text


def test_exception_that_cannot_be_unpickled_becomes_worker_error(pool: WorkerPool) -> None:
    with pytest.raises(WorkerError, match="PositionalOnlyError") as caught:
        pool.call(("positional",))
    assert "cannot be unpickled in the parent" in str(caught.value)
    assert "_raise_positional" in (remote_traceback(caught.value) or "")


def test_exception_that_cannot_be_pickled_becomes_worker_error(pool: WorkerPool) -> None:
    with pytest.raises(WorkerError, match="UnpicklableError: holds a lock") as caught:
        pool.call(("unpicklable_error",))
    assert "exc.lock" in str(caught.value)
    assert "_raise_unpicklable" in (remote_traceback(caught.value) or "")


def test_result_that_cannot_be_pickled_names_the_part(pool: WorkerPool) -> None:
    with pytest.raises(WorkerError, match=r"result\['lock'\].*cannot pickle"):
        pool.call(("return_lock",))
    assert pool.call(5) == 5


def test_payload_that_cannot_be_pickled_fails_at_submit(pool: WorkerPool) -> None:
    with pytest.raises(WorkerError, match=r"payloads\[1\]\['lock'\] \(_thread.lock\)"):
        pool.map([1, {"lock": threading.Lock()}])


def test_unpicklable_setup_fails_at_creation_naming_the_object() -> None:
    class Holder:
        def __init__(self) -> None:
            self.lock = threading.RLock()

    holder = Holder()

    def setup() -> Any:
        return lambda payload: (holder, payload)

    with pytest.raises(WorkerSetupError) as caught:
        WorkerPool(setup, workers=1)
    message = str(caught.value)
    assert "setup.<closure holder>.lock" in message
    assert "cannot pickle '_thread.RLock' object" in message


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(WorkerSetupError, match="workers must be an integer >= 1"):
        WorkerPool(pool_targets.echo_setup, workers=0)
    with pytest.raises(WorkerSetupError, match="zero-argument callable"):
        WorkerPool(42, workers=1)  # type: ignore[arg-type]


@pytest.mark.slow
def test_setup_may_be_given_already_pickled() -> None:
    with WorkerPool(dumps(pool_targets.echo_setup), workers=1) as single:
        assert single.call("x") == "x"


# ---- crashes and restarts --------------------------------------------------------------------


@pytest.mark.slow
def test_crash_mid_call_restarts_the_worker_and_retries(tmp_path: Path) -> None:
    with WorkerPool(pool_targets.echo_setup, workers=1, retries=1) as single:
        first_pid = single.pids[0]
        outcome, pid = single.call(("exit_first", str(tmp_path / "marker"), 3))
        assert outcome == "survived"
        assert pid != first_pid and (tmp_path / "marker").read_text() == str(first_pid)
        assert single.status()[0].starts == 2
        assert single.call(("setup_calls",))[0] == 1  # the replacement ran setup itself


@pytest.mark.slow
def test_crash_with_no_retry_fails_clearly_and_pool_recovers() -> None:
    with WorkerPool(pool_targets.echo_setup, workers=1, retries=0) as single:
        pid = single.pids[0]
        with pytest.raises(WorkerCrashedError) as caught:
            single.call(("exit", 3))
        assert caught.value.pid == pid and caught.value.exitcode == 3
        assert f"pid {pid}" in str(caught.value) and "exited with code 3" in str(caught.value)
        assert single.call("again") == "again"
        assert _gone(pid)


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 1])
def test_kill_9_of_a_busy_worker(tmp_path: Path, retries: int) -> None:
    marker = tmp_path / "pid"
    with WorkerPool(pool_targets.echo_setup, workers=2, retries=retries) as pair:
        future = pair.submit(("hang_first", str(marker)))
        victim = int(_wait_for(marker))
        os.kill(victim, signal.SIGKILL)
        if retries:
            outcome, pid = future.result(60)
            assert outcome == "answered" and pid != victim
        else:
            with pytest.raises(WorkerCrashedError, match="SIGKILL") as caught:
                future.result(60)
            assert caught.value.pid == victim and caught.value.exitcode == -signal.SIGKILL
        pair.wait_ready(60)
        assert victim not in pair.pids and _gone(victim)
        assert pair.map([1, 2, 3]) == [1, 2, 3]


@pytest.mark.slow
def test_an_idle_worker_killed_from_outside_is_replaced() -> None:
    with WorkerPool(pool_targets.echo_setup, workers=2) as pair:
        victim = pair.pids[0]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while pair.status()[0].starts < 2:
            assert time.monotonic() < deadline, "the killed worker was never replaced"
            time.sleep(0.02)
        pair.wait_ready(60)
        assert victim not in pair.pids and _gone(victim)
        assert pair.map(list(range(6))) == list(range(6))


@pytest.mark.slow
def test_a_call_that_always_crashes_fails_after_its_retries() -> None:
    with WorkerPool(pool_targets.echo_setup, workers=2, retries=2) as pair:
        with pytest.raises(WorkerCrashedError, match=r"tried 3 times \(retries=2\)"):
            pair.call(("exit", 9))
        assert pair.call(1) == 1


# ---- setup failures --------------------------------------------------------------------------


@pytest.mark.slow
def test_setup_that_keeps_crashing_fails_creation_clearly() -> None:
    setup = functools.partial(pool_targets.crashing_setup, 5)
    with pytest.raises(WorkerSetupError, match="failed 3 times in a row") as caught:
        WorkerPool(setup, workers=2, setup_attempts=3)
    assert "exited with code 5 during setup" in str(caught.value)
    assert "main module" not in str(caught.value)  # its worker started: setup itself exited


@pytest.mark.slow
def test_setup_crash_fails_pending_calls_and_refuses_new_ones() -> None:
    setup = functools.partial(pool_targets.crashing_setup, 6)
    broken = WorkerPool(setup, workers=1, setup_attempts=2, wait=False)
    try:
        pending = broken.submit("queued")
        with pytest.raises(WorkerSetupError, match="exited with code 6 during setup"):
            pending.result(60)
        with pytest.raises(WorkerSetupError, match="failed 2 times in a row"):
            broken.submit("later")
    finally:
        broken.close()
    assert all(status.state == "stopped" for status in broken.status())


@pytest.mark.slow
def test_setup_that_raises_reports_the_setup_traceback() -> None:
    with pytest.raises(WorkerSetupError, match="failed 1 times") as caught:
        WorkerPool(pool_targets.raising_setup, workers=1, setup_attempts=1)
    assert "RuntimeError: cannot reach the store at grpc://nowhere:1" in str(caught.value)
    assert "raising_setup" in str(caught.value)


@pytest.mark.slow
def test_setup_that_hangs_is_killed_after_setup_timeout() -> None:
    with pytest.raises(WorkerSetupError, match=r"did not finish setup within 1.5s"):
        WorkerPool(pool_targets.hanging_setup, workers=1, setup_timeout=1.5, setup_attempts=1)


# ---- timeouts --------------------------------------------------------------------------------


@pytest.mark.slow
def test_timeout_kills_the_stuck_worker_and_the_pool_keeps_working() -> None:
    with WorkerPool(pool_targets.echo_setup, workers=1) as single:
        stuck = single.pids[0]
        assert stuck is not None
        with pytest.raises(WorkerTimeoutError, match=r"within its timeout of 0.5s") as caught:
            single.call(("sleep", 60, "never"), timeout=0.5)
        assert caught.value.pid == stuck
        assert isinstance(caught.value, TimeoutError)
        assert single.call(("sleep", 0, "next"), timeout=30) == "next"
        assert single.pids[0] != stuck and _gone(stuck)


@pytest.mark.slow
def test_timeout_counts_running_time_not_queueing_time() -> None:
    with WorkerPool(pool_targets.echo_setup, workers=1) as single:
        results = single.map([("sleep", 0.4, i) for i in range(4)], timeout=5.0)
        assert results == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_shorter_timeout_is_enforced_behind_a_longer_one() -> None:
    # The dispatcher is only woken for a call whose deadline comes before the one it already
    # waits for: the short call sent second must still time out on time.
    with WorkerPool(pool_targets.echo_setup, workers=2) as pair:
        long_call = pair.submit(("sleep", 1.0, "long"), timeout=120)
        started = time.monotonic()
        with pytest.raises(WorkerTimeoutError, match=r"within its timeout of 0.5s"):
            pair.call(("sleep", 60, "never"), timeout=0.5)
        assert time.monotonic() - started < 10
        assert long_call.result(timeout=30) == "long"


# ---- shutdown --------------------------------------------------------------------------------


@pytest.mark.slow
def test_close_leaves_no_child_processes_or_threads() -> None:
    single = WorkerPool(pool_targets.echo_setup, workers=2, name="closing-pool")
    pids = [pid for pid in single.pids if pid is not None]
    assert len(pids) == 2
    single.call(1)
    single.close()
    single.close()  # safe twice
    assert all(_gone(pid) for pid in pids)
    assert not any(t.name.startswith("closing-pool") for t in threading.enumerate())
    with pytest.raises(WorkerError, match="closed"):
        single.submit(1)


@pytest.mark.slow
def test_close_kills_a_worker_that_ignores_terminate(tmp_path: Path) -> None:
    pair = WorkerPool(pool_targets.echo_setup, workers=2)
    pids = [pid for pid in pair.pids if pid is not None]
    stubborn = pair.submit(("ignore_term", str(tmp_path / "ignoring"), 60))
    running = pair.submit(("sleep", 60, "running"))
    queued = pair.submit(("sleep", 60, "queued"))
    _wait_for(tmp_path / "ignoring")  # SIGTERM is now ignored by that worker
    pair.close(grace=0.2)
    for future in (stubborn, running):
        with pytest.raises(WorkerError, match="closed before this call finished"):
            future.result(0)
    with pytest.raises(WorkerError, match="closed before this call started"):
        queued.result(0)
    assert all(_gone(pid) for pid in pids)


@pytest.mark.slow
def test_an_unclosed_pool_is_closed_at_interpreter_exit() -> None:
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import pool_targets; from dspex.runtime import WorkerPool;"
        "pool = WorkerPool(pool_targets.echo_setup, workers=2);"
        "print(*pool.pids, flush=True);"
        "pool.submit(('sleep', 60, 'busy at exit'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(HERE)],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids):  # orphans would be reaped by init, if any
        assert time.monotonic() < deadline, f"workers {pids} outlived their parent"
        time.sleep(0.05)
