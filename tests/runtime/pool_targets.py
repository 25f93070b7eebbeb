"""Setup callables and handlers for the worker-pool tests.

They live in an importable module so cloudpickle ships them by reference, as real targets are.
Each ``*_setup`` function is a zero-argument setup (or a factory for one, via functools.partial)
that returns the handler a worker runs per call.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SETUP_CALLS = 0

PICKLED: list[int] = []
"""When each :class:`Stamped` payload was pickled in this process (``perf_counter_ns``)."""


class Stamped:
    """A payload that records when the pool pickles it (just before sending it); it arrives
    in the worker as the plain ``value``."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[type[int], tuple[int]]:
        PICKLED.append(time.perf_counter_ns())
        return int, (self.value,)


class PositionalOnlyError(Exception):
    """Pickles but cannot be unpickled: ``__init__`` takes two positional arguments."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first}/{second}")


class UnpicklableError(Exception):
    """Holds a lock, so it cannot be pickled at all."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        import threading

        self.lock = threading.Lock()


def echo_setup() -> Callable[[Any], Any]:
    """Count setup calls in this process; the handler dispatches on a small command tuple."""
    global SETUP_CALLS
    SETUP_CALLS += 1
    return _echo


def _echo(payload: Any) -> Any:
    if not isinstance(payload, tuple):
        return payload
    command, *args = payload
    return _COMMANDS[command](*args)


def _sleep_then(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def _interval(seconds: float) -> tuple[float, float, int]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time(), os.getpid()


def _raise_value_error(message: str) -> Any:
    raise ValueError(message)


def _raise_positional() -> Any:
    raise PositionalOnlyError("a", "b")


def _raise_unpicklable() -> Any:
    raise UnpicklableError("holds a lock")


def _return_lock() -> Any:
    import threading

    return {"ok": 1, "lock": threading.Lock()}


def _exit_now(code: int) -> Any:
    os._exit(code)


def _exit_first_time(marker: str, code: int) -> Any:
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os._exit(code)
    return ("survived", os.getpid())


def _hang_first_time(marker: str) -> Any:
    """First run: publish the pid and wait to be killed. Later runs: answer."""
    path = Path(marker)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.rename(path)
        time.sleep(120)
    return ("answered", os.getpid())


def _ignore_sigterm_and_sleep(marker: str, seconds: float) -> Any:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def _stdin_target() -> tuple[str, str]:
    return os.readlink("/proc/self/fd/0"), os.read(0, 10).decode()


def _setup_calls() -> tuple[int, int]:
    return SETUP_CALLS, os.getpid()


_COMMANDS: dict[str, Callable[..., Any]] = {
    "sleep": _sleep_then,
    "interval": _interval,
    "value_error": _raise_value_error,
    "positional": _raise_positional,
    "unpicklable_error": _raise_unpicklable,
    "return_lock": _return_lock,
    "exit": _exit_now,
    "exit_first": _exit_first_time,
    "hang_first": _hang_first_time,
    "ignore_term": _ignore_sigterm_and_sleep,
    "stdin": _stdin_target,
    "setup_calls": _setup_calls,
}


def crashing_setup(code: int) -> Callable[[Any], Any]:
    """Setup that kills its own process (use via functools.partial)."""
    os._exit(code)


def raising_setup() -> Callable[[Any], Any]:
    """Setup that raises an ordinary exception."""
    raise RuntimeError("cannot reach the store at grpc://nowhere:1")


def hanging_setup() -> Callable[[Any], Any]:
    """Setup that never finishes."""
    time.sleep(120)
    return _echo
