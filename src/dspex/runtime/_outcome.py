"""Layer 1 runtime: turning worker replies and process deaths into parent-side exceptions.

An exception raised by the handler comes back with its own type when it pickles both ways, with
the worker's traceback text chained as ``__cause__`` (a :class:`RemoteTraceback`, the way
``concurrent.futures.ProcessPoolExecutor`` does it). Otherwise it becomes a
:class:`~dspex.errors.WorkerError` whose message and ``remote_traceback`` carry that text.
"""

from __future__ import annotations

import signal

from dspex.errors import WorkerCrashedError, WorkerError, WorkerTimeoutError
from dspex.runtime._pickling import loads


class RemoteTraceback(Exception):  # noqa: N818 - the stdlib name for the same idea
    """The traceback text of an exception raised in a worker, chained as its ``__cause__``.

    Never raised on its own; it only makes tracebacks printed in the parent show where the
    error happened in the worker. ``text`` holds the worker's formatted traceback.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


def remote_traceback(exc: BaseException) -> str | None:
    """Return the worker traceback text carried by ``exc`` from a pool call, if any."""
    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback):
        return cause.text
    text = getattr(exc, "remote_traceback", None) if isinstance(exc, WorkerError) else None
    return text if isinstance(text, str) else None


def rebuild_exception(blob: bytes | None, text: str, summary: str, pid: int) -> BaseException:
    """Rebuild the exception a handler raised in worker ``pid`` from its reply fields."""
    if blob is not None:
        try:
            exc = loads(blob)
        except Exception as err:
            summary += f" (it cannot be unpickled in the parent: {type(err).__name__}: {err})"
        else:
            if isinstance(exc, BaseException):
                exc.__cause__ = RemoteTraceback(f"Traceback from worker pid {pid}:\n{text}")
                return exc
    message = f"a call failed in worker pid {pid}: {summary}"
    if text:
        message += f"\n\nRemote traceback:\n{text.rstrip()}"
    return WorkerError(message, pid=pid, remote_traceback=text)


def describe_exit(exitcode: int | None) -> str:
    """Say how a process ended, e.g. ``"was killed by signal SIGKILL (exit code -9)"``."""
    if exitcode is None:
        return "stopped responding"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by signal {name} (exit code {exitcode})"
    return f"exited with code {exitcode}"


def crashed_error(
    worker: int, pid: int | None, exitcode: int | None, crashes: int, retries: int
) -> WorkerCrashedError:
    """The error for a call whose worker died ``crashes`` times (no retry left)."""
    tries = "it was not retried" if crashes == 1 else f"it was tried {crashes} times"
    return WorkerCrashedError(
        f"worker {worker} (pid {pid}) {describe_exit(exitcode)} while running a call; {tries} "
        f"(retries={retries}). A replacement worker is started; look for code in the handler "
        "that can kill the process (segfault, os._exit, out of memory).",
        pid=pid,
        exitcode=exitcode,
        worker=worker,
    )


def timeout_error(worker: int, pid: int | None, timeout: float | None) -> WorkerTimeoutError:
    """The error for a call that ran past its ``timeout`` (its worker was killed)."""
    return WorkerTimeoutError(
        f"the call did not finish within its timeout of {timeout}s on worker {worker} "
        f"(pid {pid}); the worker was killed and is being replaced. Raise the timeout or make "
        "the call faster.",
        pid=pid,
        timeout=timeout,
    )
