"""Layer 3: ``dspex.Remote``, a DSPy module running in a pool of workers (spawned or Ray actors).

The pool is :class:`dspex.runtime.WorkerPool` (Layer 1: spawn, crash restart, retries,
timeouts); this module adds the session. Creating a Remote promotes the session (an in-process
session starts its embedded store server, see :meth:`dspex.Session.promote`), pickles the module
once with cloudpickle, and starts workers that each join the session through the store, so the
module's bound variables resolve in the worker exactly as they do in the parent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import cloudpickle

from dspex import _tracing
from dspex.errors import WorkerError, WorkerSetupError
from dspex.remote._carry import CarriedChanges, ChangeCarrier
from dspex.remote._progress import ProgressOption, progress_callback
from dspex.remote._shipping import check_settings_travel
from dspex.remote._shipping import settings_blob as _settings_blob
from dspex.remote._transport import STORE_POLLS, grpc_transport
from dspex.remote._worker import CallPayload, RemoteSetup, connect_timeout
from dspex.runtime import WorkerPool
from dspex.runtime._pickling import describe, explain_unpicklable
from dspex.session import Session, current_session

if TYPE_CHECKING:
    from dspex.runtime._calls import ProgressCallback
    from dspex.runtime._ray import RayPool

__all__ = ["Remote"]

Backend = Literal["spawn", "ray"]
"""Where the workers run: spawned processes on this machine, or Ray actors of a cluster."""


class Remote:
    """Run a DSPy module in ``workers`` processes (spawned, or Ray actors) sharing the session.

    The module is pickled once (cloudpickle) and shipped to every worker. Each worker joins the
    session through its store and runs every call inside it, so variables bound with
    :func:`dspex.bind` resolve there at call time: a ``session.set`` in this process is seen by
    the next call on any worker. The LM comes from a bound ``lm`` variable, or else from the LM
    (and adapter) configured in ``dspy.settings`` here when the Remote is created, which the
    workers configure when they start (one that cannot be pickled is an error here).

    An in-process session is promoted to a session store when the Remote is created (see
    :meth:`dspex.Session.promote`); the program code does not change. The workers are closed
    by :meth:`close`, by leaving a ``with`` block, or when the session closes.

    Failures are never silent: a worker that dies mid-call is replaced and the call retried up
    to ``retries`` times, then it fails with :class:`~dspex.errors.WorkerCrashedError`; a call
    running past ``timeout`` fails with :class:`~dspex.errors.WorkerTimeoutError` (the worker
    is replaced); an exception raised by the module re-raises here with its worker traceback.

    Like every spawn pool, a script that creates a Remote needs an
    ``if __name__ == "__main__":`` guard.

    With ``backend="ray"`` the workers are Ray actors of the cluster this process is connected
    to (``ray.init(address=...)`` or ``$RAY_ADDRESS``; without either a local Ray instance is
    started). The same promises hold; the session is then promoted to a TCP listener on this
    node's IP with a random bearer token (see :meth:`dspex.Session.promote`), or its
    ``dspex serve`` address is passed on. Needs ``pip install 'dspex[ray]'``.

    Args:
        module: a ``dspy.Module`` (or any picklable callable) to run in the workers.
        workers: number of worker processes.
        timeout: seconds one call may run on a worker (None: no limit).
        retries: how many times a call lost to a worker crash is retried.
        session: the session to run in (default: the current one).
        backend: ``"spawn"`` (processes on this machine) or ``"ray"`` (Ray actors).
        actor_options: Ray actor options passed through (``num_cpus``, ``resources``,
            ``runtime_env``, ``scheduling_strategy``, ...); only with ``backend="ray"``.
        setup_timeout: seconds a worker may take to start and join the session (for Ray, to
            be placed on a node too); past it creation fails, or a call waiting for a
            replacement fails.
        progress: while the workers start (a hundred take tens of seconds on two cores):
            None draws a rich bar when stdout is a terminal; True/False force it on/off; a
            callable is called as ``progress(ready, total)``.

    Raises:
        SessionError: no session is given or active.
        WorkerSetupError: the module cannot be pickled (the message names the part that
            cannot), an argument is invalid, or the workers cannot start or cannot reach the
            session store (the message names the address tried).

    Examples:
        >>> with dspex.Session() as session:  # doctest: +SKIP
        ...     with dspex.Remote(Support(), workers=2) as remote:
        ...         remote(question="What is DSPy?").answer
        ...         remote.map([{"question": q} for q in questions])
    """

    def __init__(
        self,
        module: Callable[..., Any],
        workers: int = 2,
        *,
        timeout: float | None = None,
        retries: int = 1,
        session: Session | None = None,
        backend: Backend = "spawn",
        actor_options: Mapping[str, Any] | None = None,
        setup_timeout: float = 60.0,
        progress: ProgressOption = None,
    ) -> None:
        _check_arguments(workers, retries, timeout)
        _check_backend(backend, actor_options, setup_timeout)
        self.session = session if session is not None else current_session()
        self.module_name = type(module).__name__
        self._span = f"dspex.remote {self.module_name}"
        """A traced call is a span of this name; the worker's spans are its children."""
        check_settings_travel()  # an LM or adapter that cannot be pickled: nothing started
        self.timeout = timeout
        self.backend = backend
        blob = _pickle_module(module)  # before anything starts: a bad module changes nothing
        self._carrier = ChangeCarrier(self.session)  # before the workers open their caches
        name = f"dspex-remote-{self.module_name}"
        self._pool: WorkerPool | RayPool
        label = f"Starting {workers} {backend} workers of {self.module_name}"
        with progress_callback(progress, label) as started:
            if backend == "ray":
                from dspex.remote._cluster import start_ray_pool

                self._pool = start_ray_pool(
                    self.session,
                    blob,
                    _settings_blob(),
                    workers=workers,
                    retries=retries,
                    setup_timeout=setup_timeout,
                    actor_options=actor_options,
                    name=name,
                    progress=started,
                )
            else:
                self._pool = _start_spawn_pool(
                    self.session,
                    blob,
                    workers,
                    retries=retries,
                    setup_timeout=setup_timeout,
                    name=name,
                    progress=started,
                )
        self.closed = False
        self.session._on_close.append(self.close)

    # -- calls --------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``module(*args, **kwargs)`` on a worker and return its result (a Prediction).

        Raises:
            Exception: whatever the module raised, with the worker traceback as ``__cause__``.
            WorkerCrashedError: the worker died and no retry was left.
            WorkerTimeoutError: the call ran longer than ``timeout``.
            WorkerError: the Remote is closed, or an argument or result cannot be pickled.
        """
        with _tracing.span(self._span):
            return self._pool.call(self._payload(args, kwargs), timeout=self.timeout)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Async twin of :meth:`__call__`: awaits the worker without blocking the event loop."""
        with _tracing.span(self._span):
            future = self._pool.submit(self._payload(args, kwargs), timeout=self.timeout)
            return await asyncio.wrap_future(future)

    def map(
        self,
        inputs: Iterable[Mapping[str, Any] | Any],
        *,
        progress: ProgressOption = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run the module once per input, in parallel on the workers; results in input order.

        Args:
            inputs: keyword arguments per call: mappings, or ``dspy.Example`` objects (their
                ``inputs()`` are used).
            progress: None draws a rich progress bar when stdout is a terminal; True/False
                force it on/off; a callable is called as ``progress(done, total)``.
            return_exceptions: put each failed call's exception in its slot instead of raising
                the first failure (the other calls still run).

        Raises:
            Exception: the first failure, unless ``return_exceptions``.
        """
        with _tracing.span(f"{self._span}.map"):
            (revision, changes), trace = self._stamp(), _tracing.carrier()
            payloads = [
                CallPayload(revision, (), _kwargs_of(item, i), trace, changes)
                for i, item in enumerate(inputs)
            ]
            label = f"{self.module_name} on {self.workers} workers"
            with progress_callback(progress, label) as cb:
                return self._pool.map(
                    payloads,
                    timeout=self.timeout,
                    progress=cb,
                    return_exceptions=return_exceptions,
                )

    # -- pool ---------------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """The number of workers (processes or actors)."""
        return self._pool.workers

    @property
    def pids(self) -> list[int | None]:
        """The current process id of each worker (None while one is restarting).

        For Ray actors, the id on the node that runs the actor.
        """
        return self._pool.pids

    @property
    def address(self) -> str:
        """The session store address the workers use."""
        address = self.session.address
        assert address is not None  # promoted in __init__
        return address

    def close(self, *, grace: float = 5.0) -> None:
        """Stop the workers (running calls get ``grace`` seconds). Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._pool.close(grace=grace)
        try:
            self.session._on_close.remove(self.close)
        except ValueError:  # the session is closing and already took it off
            pass

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"workers={self.workers}"
        return f"<Remote {self.module_name} {state} session={self.session.session_id!r}>"

    def _payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallPayload:
        revision, changes = self._stamp()
        return CallPayload(revision, args, kwargs, _tracing.carrier(), changes)

    def _stamp(self) -> tuple[int, CarriedChanges | None]:
        """The session revision now, which the worker catches up to before running the call,
        and the changes it may apply to get there (see :mod:`dspex.remote._carry`)."""
        if self.closed:
            raise WorkerError(f"this Remote of {self.module_name} is closed; create a new one")
        return self._carrier.stamp()


def _check_arguments(workers: object, retries: object, timeout: object) -> None:
    for name, value, minimum in (("workers", workers, 1), ("retries", retries, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise WorkerSetupError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise WorkerSetupError(f"timeout must be positive seconds or None, got {timeout!r}")


def _start_spawn_pool(
    session: Session,
    module: bytes,
    workers: int,
    *,
    retries: int,
    setup_timeout: float,
    name: str,
    progress: ProgressCallback | None,
) -> WorkerPool:
    """Promote the session (a private unix socket for an in-process one) and spawn the workers.

    When this is what first loads gRPC here, the embedded store gets the transport whose
    sockets are polled by the threads waiting on them (see :mod:`dspex.remote._transport`).
    """
    with grpc_transport(STORE_POLLS):  # the embedded store's server initializes gRPC
        session.promote()
    setup = RemoteSetup.of(session, module, _settings_blob(), connect_timeout(setup_timeout))
    pool = WorkerPool(
        setup,
        workers=workers,
        retries=retries,
        setup_timeout=setup_timeout,
        name=name,
        wait=False,
    )
    try:
        pool.wait_ready(None, progress=progress)
    except BaseException:
        pool.close(grace=0.0)
        raise
    return pool


def _check_backend(backend: object, actor_options: object, setup_timeout: object) -> None:
    if backend not in ("spawn", "ray"):
        raise WorkerSetupError(f"backend must be 'spawn' or 'ray', got {backend!r}")
    if actor_options is not None and backend != "ray":
        raise WorkerSetupError(
            "actor_options are Ray actor options: give them with backend='ray' (spawned "
            "workers take none)"
        )
    if isinstance(setup_timeout, bool) or not isinstance(setup_timeout, int | float):
        raise WorkerSetupError(f"setup_timeout must be positive seconds, got {setup_timeout!r}")
    if not setup_timeout > 0:
        raise WorkerSetupError(f"setup_timeout must be positive seconds, got {setup_timeout!r}")


def _kwargs_of(item: Any, index: int) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    inputs = getattr(item, "inputs", None)
    if callable(inputs):  # a dspy.Example with its input keys set
        return dict(inputs())
    raise WorkerError(
        f"Remote.map inputs[{index}] is {describe(item)}; give a mapping of keyword arguments "
        "(e.g. {'question': ...}) or a dspy.Example with inputs set (example.with_inputs(...))"
    )


def _pickle_module(module: Any) -> bytes:
    if not callable(module):
        raise WorkerSetupError(
            f"dspex.Remote needs a callable module (a dspy.Module), got {describe(module)}"
        )
    try:
        return cloudpickle.dumps(module)  # type: ignore[no-any-return]
    except Exception as exc:
        reason = explain_unpicklable(module, "module")
        raise WorkerSetupError(
            f"dspex.Remote cannot ship the module {type(module).__name__} to worker processes: "
            f"{reason}. Keep live objects (locks, clients, open files, threads) out of the "
            "module, or create them lazily inside forward(); nothing was started.",
            module=type(module).__name__,
        ) from exc
