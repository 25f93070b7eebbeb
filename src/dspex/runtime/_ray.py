"""Layer 1 runtime: :class:`RayPool`, the worker pool on Ray actors (``pip install 'dspex[ray]'``).

The same contract as :class:`dspex.runtime.WorkerPool` (a setup callable shipped once, then
``handler(payload)`` per call, crash retries, per-call timeouts, ordered ``map``), with each
worker a Ray actor of the cluster this process is connected to. ray is imported only when a
RayPool is created, never by ``import dspex`` or the spawn pool.

Each seat (one actor) has a thread that takes calls from the shared queue and waits on the
actor's reply with ``ray.get``, so a call costs one actor round trip plus a queue hand-off. A
dead actor (process killed, node lost) is killed for good and replaced by a new actor in that
seat, and the lost call is retried there up to ``retries`` times; a call past its timeout kills
its actor, which is replaced too. A replacement that cannot start within ``setup_timeout``
(e.g. no node has the resources it asks for any more) fails the call instead of waiting.

The setup travels as a Ray object (``ray.put``): the actor's creation task, which Ray keeps in
its control store and shows in its dashboard, holds only the object id, never the setup's bytes
(which may carry a store token).
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import WorkerCrashedError, WorkerError, WorkerSetupError, WorkerTimeoutError
from dspex.runtime import _worker
from dspex.runtime._calls import PoolCalls, ProgressCallback
from dspex.runtime._outcome import rebuild_exception
from dspex.runtime._pickling import loads
from dspex.runtime._pool import check_positive_int, pickle_setup
from dspex.runtime._ray_actor import RayWorker
from dspex.runtime._slot import CallJob

__all__ = ["ACTOR_OPTIONS", "RayPool", "connect_ray", "import_ray"]

ACTOR_OPTIONS = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "memory",
        "resources",
        "accelerator_type",
        "runtime_env",
        "scheduling_strategy",
        "label_selector",
    }
)
"""Ray actor options a RayPool passes through (``.options(...)``). Restarts and retries stay the
pool's, and actors are never detached: they end with the pool (or the driver)."""

_KILL_GRACE = 2.0  # seconds a seat thread gets to notice its killed actor at close


def import_ray() -> Any:
    """Import ray, or explain how to install it.

    Raises:
        WorkerSetupError: ray is not installed.
    """
    try:
        import ray
    except ImportError as exc:
        raise WorkerSetupError(
            "backend='ray' needs Ray: pip install 'dspex[ray]' (or pip install 'ray[default]')"
        ) from exc
    return ray


def connect_ray() -> str:
    """Connect to the Ray cluster (``ray.init()`` if needed) and return this node's IP.

    ``ray.init()`` follows Ray's usual rules: ``$RAY_ADDRESS`` names a running cluster;
    without it a local one is started. Call ``ray.init(address=...)`` yourself to choose.
    """
    ray = import_ray()
    if not ray.is_initialized():
        ray.init()
    return str(ray.util.get_node_ip_address())


@dataclass(eq=False)
class _Seat:
    """One actor seat: the actor handle, its readiness and where it runs."""

    index: int
    actor: Any = None
    ready_ref: Any = None
    pid: int | None = None
    host: str | None = None
    starts: int = 0
    thread: threading.Thread | None = field(default=None, repr=False)


class RayPool(PoolCalls):
    """A fixed-size pool of Ray actors running one picklable target (see the module docstring).

    Args:
        setup: a picklable zero-argument callable returning the handler, or its cloudpickled
            bytes; it runs once in every actor (and again in a replacement).
        workers: number of actors (>= 1).
        retries: how many times a call lost to a dead actor is retried (>= 0).
        setup_timeout: seconds an actor may take to be placed, start and finish setup.
        actor_options: Ray actor options passed through (``num_cpus``, ``resources``,
            ``runtime_env``, ... see :data:`ACTOR_OPTIONS`).
        name: names the pool in its threads and error messages.
        progress: called as ``progress(ready, total)`` while the actors start.

    Raises:
        WorkerSetupError: ray is missing, an argument or actor option is invalid, setup cannot
            be pickled, or an actor cannot start (the message carries its error).
    """

    def __init__(
        self,
        setup: Callable[[], Callable[[Any], Any]] | bytes,
        *,
        workers: int = 1,
        retries: int = 1,
        setup_timeout: float = 60.0,
        actor_options: Mapping[str, Any] | None = None,
        name: str = "dspex-worker",
        progress: ProgressCallback | None = None,
    ) -> None:
        check_positive_int("workers", workers, 1)
        check_positive_int("retries", retries, 0)
        options = check_actor_options(actor_options)
        blob = setup if isinstance(setup, bytes) else pickle_setup(setup)
        self._ray = import_ray()
        connect_ray()
        self._retries = retries
        self._setup_timeout = setup_timeout
        self._name = name
        self._blob_ref = self._ray.put(blob)
        self._actor_class = self._ray.remote(RayWorker)
        self._options = {"max_restarts": 0, "max_task_retries": 0, "max_concurrency": 1}
        self._options.update(options)
        self._seats = [_Seat(index) for index in range(workers)]
        self._queue: queue.SimpleQueue[CallJob | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._call_ids = itertools.count()
        try:
            for seat in self._seats:
                self._start(seat)
            deadline = time.monotonic() + setup_timeout  # one deadline: actors start together
            for ready, seat in enumerate(self._seats):
                if progress is not None:
                    progress(ready, workers)
                self._await_ready(seat, max(0.0, deadline - time.monotonic()))
            if progress is not None:
                progress(workers, workers)
        except BaseException:
            self._kill_all()
            raise
        for seat in self._seats:
            seat.thread = threading.Thread(
                target=self._serve, args=(seat,), name=f"{name}-ray-{seat.index}", daemon=True
            )
            seat.thread.start()

    # -- caller side --------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """The number of actor seats."""
        return len(self._seats)

    @property
    def pids(self) -> list[int | None]:
        """The process id of each seat's actor (None while a replacement starts)."""
        return [seat.pid for seat in self._seats]

    @property
    def hosts(self) -> list[str | None]:
        """The host name each seat's actor runs on (None while a replacement starts)."""
        return [seat.host for seat in self._seats]

    def close(self, *, grace: float = 5.0) -> None:
        """Stop the actors: queued calls fail, running ones get ``grace`` seconds. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._fail_queued()
        for _ in self._seats:
            self._queue.put(None)
        deadline = time.monotonic() + grace
        for seat in self._seats:
            if seat.thread is not None:
                seat.thread.join(max(0.0, deadline - time.monotonic()))
        self._kill_all()
        for seat in self._seats:
            if seat.thread is not None:
                seat.thread.join(_KILL_GRACE)
        self._fail_queued()

    def __repr__(self) -> str:
        return f"<RayPool workers={self.workers} {'closed' if self._closed else 'open'}>"

    def _enqueue(self, job: CallJob) -> None:
        with self._lock:
            if self._closed:
                raise WorkerError("the Ray worker pool is closed; create a new one")
            self._queue.put(job)

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(
                    WorkerError("the worker pool was closed before this call started")
                )

    # -- actors -------------------------------------------------------------------------------

    def _start(self, seat: _Seat) -> None:
        """Create a new actor in ``seat`` (placement and setup go on in the background)."""
        seat.starts += 1
        seat.pid = seat.host = None
        seat.actor = self._actor_class.options(**self._options).remote(self._blob_ref)
        seat.ready_ref = seat.actor.ready.remote()

    def _await_ready(self, seat: _Seat, timeout: float | None = None) -> None:
        """Wait until the seat's actor finished setup (at most ``timeout``, else the pool's).

        Raises:
            WorkerSetupError: it failed or did not start within ``setup_timeout``.
        """
        ray = self._ray
        timeout = self._setup_timeout if timeout is None else timeout
        try:
            seat.pid, seat.host = ray.get(seat.ready_ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise WorkerSetupError(
                f"Ray actor {seat.index} of {self._name} did not start within "
                f"{self._setup_timeout:g}s: no node may offer the resources it asks for "
                f"({self._asks()}), or its setup hangs. Check `ray status`, the actor options, "
                "or raise setup_timeout.",
                worker=seat.index,
            ) from None
        except ray.exceptions.RayError as exc:
            raise WorkerSetupError(
                f"Ray actor {seat.index} of {self._name} failed to start: {_ray_reason(exc)}",
                worker=seat.index,
            ) from None

    def _asks(self) -> str:
        """The resources one actor asks for, as given (Ray's defaults otherwise)."""
        asked = {
            k: self._options[k]
            for k in ("num_cpus", "num_gpus", "resources")
            if k in self._options
        }
        return ", ".join(f"{k}={v!r}" for k, v in asked.items()) or "Ray's defaults: num_cpus=1"

    def _replace(self, seat: _Seat) -> None:
        """Kill the seat's actor for good and start a replacement."""
        self._kill(seat)
        if not self._closed:
            self._start(seat)

    def _kill(self, seat: _Seat) -> None:
        if seat.actor is not None:
            try:
                self._ray.kill(seat.actor, no_restart=True)
            except Exception:  # already gone; nothing left to stop
                pass
        seat.actor = seat.ready_ref = None
        seat.pid = seat.host = None

    def _kill_all(self) -> None:
        for seat in self._seats:
            self._kill(seat)

    # -- the seat threads ---------------------------------------------------------------------

    def _serve(self, seat: _Seat) -> None:
        """Take calls from the queue and run them on this seat's actor until told to stop."""
        while True:
            job = self._queue.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                ok, value = self._run(seat, job)
            except BaseException as exc:  # never leave a caller waiting on a broken seat
                ok, value = False, WorkerError(f"the Ray pool failed to run a call: {exc!r}")
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _run(self, seat: _Seat, job: CallJob) -> tuple[bool, Any]:
        """Run ``job`` on the seat's actor, replacing a dead actor and retrying as allowed."""
        ray = self._ray
        lost: tuple[int | None, str | None] = (None, None)  # the actor the last try died on
        while True:
            if self._closed:
                return False, WorkerError("the worker pool was closed before this call finished")
            if seat.actor is None:
                self._start(seat)
            if seat.pid is None:
                try:
                    self._await_ready(seat)
                except WorkerSetupError as exc:
                    self._kill(seat)
                    if job.crashes:  # lost to a crash, and no replacement to retry it on
                        return False, self._crashed_error(seat.index, *lost, job.crashes, exc)
                    return False, exc
            lost = (seat.pid, seat.host)
            try:
                reply = ray.get(seat.actor.call.remote(job.data), timeout=job.timeout)
            except ray.exceptions.GetTimeoutError:
                self._replace(seat)
                return False, _timeout_error(seat.index, *lost, job.timeout)
            except ray.exceptions.RayTaskError as exc:  # the actor method itself broke
                return False, WorkerError(f"a call failed in Ray actor pid {lost[0]}: {exc}")
            except ray.exceptions.RayError as exc:  # the actor or its node died
                self._replace(seat)
                job.crashes += 1
                if job.crashes > self._retries and not self._closed:
                    return False, self._crashed_error(seat.index, *lost, job.crashes, exc)
                continue
            return _decode(reply, lost[0] or 0)

    def _crashed_error(
        self, index: int, pid: int | None, host: str | None, crashes: int, exc: BaseException
    ) -> WorkerCrashedError:
        tries = "it was not retried" if crashes == 1 else f"it was tried {crashes} times"
        tries += f" (retries={self._retries})"
        if isinstance(exc, WorkerSetupError):
            tries += f", and no replacement actor could start to retry it: {exc.message}"
        else:
            tries += f". Ray says: {_ray_reason(exc)}"
        return WorkerCrashedError(
            f"Ray actor {index} (pid {pid} on {host}) died while running a call; {tries}. A "
            "replacement actor is started; look for code that can kill the process, or for a "
            "lost node.",
            pid=pid,
            worker=index,
        )


def check_actor_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate Ray actor options (names only: Ray checks the values).

    Raises:
        WorkerSetupError: an option is not one a pool passes through.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise WorkerSetupError(f"actor_options must be a mapping, got {type(options).__name__}")
    unknown = sorted(set(options) - ACTOR_OPTIONS)
    if unknown:
        raise WorkerSetupError(
            f"actor option(s) {unknown} are not passed to Ray actors; use some of "
            f"{sorted(ACTOR_OPTIONS)} (restarts and retries are the pool's: use retries=)"
        )
    return dict(options)


def _decode(reply: bytes, pid: int) -> tuple[bool, Any]:
    try:
        message = loads(reply)
    except Exception as exc:
        return False, WorkerError(
            f"the result of a call on Ray actor pid {pid} cannot be unpickled here: "
            f"{type(exc).__name__}: {exc}. Return types the caller can import."
        )
    if message[0] == _worker.RESULT:
        return True, message[2]
    _, _, blob, text, summary = message
    return False, rebuild_exception(blob, text, summary, pid)


def _timeout_error(
    index: int, pid: int | None, host: str | None, timeout: float | None
) -> WorkerTimeoutError:
    return WorkerTimeoutError(
        f"the call did not finish within its timeout of {timeout}s on Ray actor {index} "
        f"(pid {pid} on {host}); the actor was killed and is being replaced. Raise the timeout "
        "or make the call faster.",
        pid=pid,
        timeout=timeout,
    )


def _ray_reason(exc: BaseException) -> str:
    """A Ray error in one line: the error raised last, and where (Ray's first line)."""
    text = _ANSI.sub("", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    return f"{lines[-1]} ({lines[0]})"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
