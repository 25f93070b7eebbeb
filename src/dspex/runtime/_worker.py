"""Layer 1 runtime: the worker process entry point.

A worker is started by :class:`dspex.runtime.WorkerPool` with the ``spawn`` start method. It
unpickles the setup callable once, calls it to get a handler, reports ``READY``, then loops:
receive a pickled ``(call_id, payload)``, run ``handler(payload)``, send back the result or the
exception with its traceback text. An empty message (or the parent going away) ends the loop.

The wire messages (all cloudpickled tuples, one per ``send_bytes``):

- worker -> parent: ``(STARTED, pid)`` as soon as this entry point runs (a worker that exits
  without it never got past re-importing the parent's main module), then ``(READY, pid)``,
  ``(SETUP_FAILED, text)``, ``(RESULT, call_id, value)``,
  ``(RAISED, call_id, exception_bytes_or_None, traceback_text, summary)``;
- parent -> worker: ``(call_id, payload)``, or ``STOP`` (empty bytes).

The entry point adds only the standard library and cloudpickle to what ``import dspex`` loads,
so workers start fast; whatever the handler needs is imported by the setup callable. Fd 0 is
pointed at the null device (``multiprocessing`` only swaps the ``sys.stdin`` object), and SIGINT
is ignored: Ctrl-C belongs to the parent, which then closes the pool.

A worker never outlives its parent: a daemon thread waits on the parent's sentinel (the pipe
``multiprocessing`` leaves open while the parent lives) and ends the worker at once when the
parent dies, even in the middle of a call that would run for hours (:func:`exit_with_parent`).
Without it, a parent killed with ``kill -9`` left every busy worker running its call to the end,
holding its memory, its store connection and whatever the call held.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing import parent_process
from multiprocessing.connection import Connection, wait
from typing import Any

from dspex.runtime._pickling import dumps, explain_unpicklable, loads

STARTED = "started"
READY = "ready"
SETUP_FAILED = "setup_failed"
RESULT = "result"
RAISED = "raised"
STOP = b""
ORPHANED = 70
"""Exit code of a worker that ended because its parent died (``EX_SOFTWARE``)."""

Handler = Callable[[Any], Any]


def main(conn: Connection, setup_blob: bytes) -> None:
    """Run one worker: set up once, then serve calls until told to stop.

    Args:
        conn: this worker's end of its duplex pipe to the pool.
        setup_blob: the cloudpickled setup callable; called once, it returns the handler.
    """
    conn.send_bytes(dumps((STARTED, os.getpid())))
    exit_with_parent()
    _detach_stdin()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's decision
    handler = _set_up(conn, setup_blob)
    if handler is None:
        return
    _serve(conn, handler)


def exit_with_parent() -> None:
    """End this process as soon as its parent dies, whatever its main thread is doing.

    A daemon thread waits on the parent's sentinel and then calls ``os._exit``: no cleanup
    runs (the call in progress has nobody to answer to, and a handler blocked in a C call or
    an LM request would never notice otherwise). A process that is not a spawned child (no
    parent sentinel) is left alone.
    """
    parent = parent_process()
    sentinel = None if parent is None else parent.sentinel
    if sentinel is None:
        return

    def watch() -> None:
        wait([sentinel])
        try:
            sys.stderr.write(
                f"dspex worker pid {os.getpid()}: its parent process went away; exiting\n"
            )
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed with the parent's terminal
            pass
        os._exit(ORPHANED)

    threading.Thread(target=watch, name="dspex-worker-parent-watch", daemon=True).start()


def _detach_stdin() -> None:
    """Point fd 0 at the null device so the worker never reads the parent's stdin."""
    try:
        null_fd = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return
    try:
        os.dup2(null_fd, 0)
    except OSError:
        pass
    finally:
        os.close(null_fd)


def _set_up(conn: Connection, setup_blob: bytes) -> Handler | None:
    try:
        setup = loads(setup_blob)
        handler = setup()
        if not callable(handler):
            raise TypeError(f"setup returned {type(handler).__qualname__}, not a callable handler")
    except BaseException:  # report everything, including SystemExit from setup
        text = traceback.format_exc()
        try:
            conn.send_bytes(dumps((SETUP_FAILED, text)))
        except OSError:  # the parent went away; nobody is left to tell
            pass
        return None
    conn.send_bytes(dumps((READY, os.getpid())))
    return handler  # type: ignore[no-any-return]


def _serve(conn: Connection, handler: Handler) -> None:
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the parent went away: nothing left to serve
            return
        if message == STOP:
            return
        reply = run_call(message, handler)
        try:
            conn.send_bytes(reply)
        except (BrokenPipeError, OSError):
            return


def run_call(message: bytes, handler: Handler) -> bytes:
    call_id = -1
    try:
        call_id, payload = loads(message)
        value = handler(payload)
    except Exception as exc:
        return _raised_reply(call_id, exc)
    except BaseException as exc:  # SystemExit/KeyboardInterrupt must not re-raise in the parent
        return _raised_reply(call_id, exc, send_exception=False)
    try:
        return dumps((RESULT, call_id, value))
    except Exception:
        reason = explain_unpicklable(value, "result")
        summary = f"the handler's result cannot be pickled back to the parent: {reason}"
        return dumps((RAISED, call_id, None, "", summary))


def _raised_reply(call_id: int, exc: BaseException, *, send_exception: bool = True) -> bytes:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    blob = None
    if send_exception:
        try:
            blob = dumps(exc)
        except Exception:
            summary += f" (the exception cannot be pickled: {explain_unpicklable(exc, 'exc')})"
    return dumps((RAISED, call_id, blob, text, summary))
