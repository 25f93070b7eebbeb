"""Layer 3: what runs inside a ``dspex.Remote`` worker process.

:class:`RemoteSetup` is the picklable setup target the worker pool ships once to every worker. In
the worker it connects to the session store as ``SessionContext.connect`` does (a read cache kept
coherent by a watch stream, after waiting up to ``CONNECT_TIMEOUT`` to first reach the store),
makes that session current for the worker's lifetime, unpickles the module and applies the DSPy
settings shipped from the parent (its LM and adapter, when they pickle). :class:`RemoteHandler`
then runs one call per payload.

Each payload carries the parent's session revision at the moment of the call, and, when the parent
holds the session, the changes that led to it (:mod:`dspex.remote._carry`). Before running, the
worker brings its cache to that revision: it applies the carried changes, or else waits until its
stream has applied the revision. So a change made in the parent before a call is always seen by
that call, also by bound hooks, whose one-snapshot ``get_variables`` is served from the cache at
the revision it has applied (at least the caller's, once caught up).

A spawned worker is a process dspex owns whose gRPC client mostly waits on one watch stream, so
before gRPC loads it picks the transport that the thread reading the stream polls itself (see
:mod:`dspex.remote._transport`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import cloudpickle

from dspex import _tracing
from dspex.remote._carry import CarriedChanges, stream_linger
from dspex.remote._transport import READER_POLLS, grpc_transport
from dspex.runtime._pickling import loads
from dspex.session import Session

if TYPE_CHECKING:
    from dspex.state.store import CachedProvider

__all__ = ["CallPayload", "RemoteHandler", "RemoteSetup", "connect_timeout"]

CATCH_UP_TIMEOUT = 5.0
"""Longest a worker waits for its cache to reach the caller's revision before reading through
to the store (see :meth:`RemoteHandler._catch_up`)."""

CONNECT_TIMEOUT = 30.0
"""Longest a starting worker waits to first reach the store (at most half the pool's setup
timeout, see :func:`connect_timeout`). A fleet starting at once (a hundred workers on two cores)
can keep the store from answering for longer than one call's timeout; a store that cannot be
reached still fails setup within this bound."""


def connect_timeout(setup_timeout: float) -> float:
    """How long a worker waits to first reach the store, for a pool's ``setup_timeout``."""
    return min(CONNECT_TIMEOUT, setup_timeout / 2)


class CallPayload(NamedTuple):
    """One call sent to a worker: the caller's session revision, the call's arguments, the
    caller's trace context (W3C headers) when it traces, and the changes that led to the
    revision when the caller could send them (see :mod:`dspex.remote._carry`)."""

    revision: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    trace: dict[str, str] | None = None
    changes: CarriedChanges | None = None


@dataclass(frozen=True)
class RemoteSetup:
    """The worker setup target: where the session lives and what to run (all picklable).

    Attributes:
        module: the cloudpickled module (pickled once, in the parent).
        address: the session store address (``unix:///...`` or ``grpc://host:port``).
        session_id: the session the calls run in.
        token: the store's bearer token, if it needs one.
        settings: cloudpickled ``dspy.configure`` keyword arguments (``lm``, ``adapter``) taken
            from the parent, or None.
        connect_timeout: seconds to wait for the first contact with the store.
        root_cert: the CA certificate (PEM) to trust for a ``grpcs://`` address (a session
            promoted with TLS); None: ``$DSPEX_TLS_CA`` or the system roots.
        linger: seconds the store may hold news for the worker's cache stream (see
            :func:`dspex.remote._carry.stream_linger`).
    """

    module: bytes
    address: str
    session_id: str
    token: str | None
    settings: bytes | None
    connect_timeout: float = CONNECT_TIMEOUT
    root_cert: bytes | None = None
    linger: float = 0.0

    @classmethod
    def of(
        cls, session: Session, module: bytes, settings: bytes | None, connect_timeout: float
    ) -> RemoteSetup:
        """The setup reaching ``session``'s store (promote it first) as its address, token and
        CA say."""
        address = session.address
        assert address is not None, "promote the session first"
        return cls(
            module,
            address,
            session.session_id,
            session.store_token,
            settings,
            connect_timeout,
            session.store_ca,
            stream_linger(session),
        )

    def __call__(self) -> RemoteHandler:
        """Connect, enter the session, unpickle the module; return the per-call handler."""
        with grpc_transport(READER_POLLS):  # the store channel initializes gRPC
            _tracing.configure_from_env("dspex-worker")  # before the store channel opens
            provider = _follow(self, self.connect_timeout)
        session = Session(provider, session_id=self.session_id)
        module = cloudpickle.loads(self.module)
        if self.settings is not None:
            import dspy

            dspy.configure(**cloudpickle.loads(self.settings))
        # Current for the rest of this worker's life (the pool runs every call on this thread);
        # never exited, since leaving the last `with` would close the session's view.
        session.__enter__()
        return RemoteHandler(module, session, provider)

    def __repr__(self) -> str:
        return (
            f"RemoteSetup(session_id={self.session_id!r}, address={self.address!r}, "
            f"module={len(self.module)} bytes)"
        )


def _follow(setup: RemoteSetup, patience: float) -> CachedProvider:
    """What ``SessionContext.connect`` does (a watched read cache), after waiting up to
    ``patience`` seconds for the first contact with the store (see :data:`CONNECT_TIMEOUT`)."""
    from dspex.state.store import CachedProvider, SessionStoreProvider

    store = SessionStoreProvider(setup.address, token=setup.token, root_cert=setup.root_cert)
    try:
        store.wait_ready(patience)
        provider = CachedProvider(store, linger=setup.linger)
        provider.follow(setup.session_id)
    except BaseException:
        store.close()
        raise
    return provider


class RemoteHandler:
    """Runs ``module(*args, **kwargs)`` per payload, in the worker's session.

    Args:
        module: the unpickled module.
        session: the worker's view of the caller's session (current while calls run).
        provider: the cached store client behind ``session``.
    """

    def __init__(
        self, module: Callable[..., Any], session: Session, provider: CachedProvider
    ) -> None:
        self.module = module
        self.session = session
        self.cache = provider

    def __call__(self, payload: CallPayload) -> Any:
        revision, args, kwargs, trace, changes = payload
        self._catch_up(revision, changes)
        with _tracing.continued(trace):
            return self.module(*args, **kwargs)

    def _catch_up(self, revision: int, changes: CarriedChanges | None) -> None:
        """Bring the read cache to the caller's ``revision`` before the call runs.

        With the changes the caller sent, the cache applies them at once, as soon as its
        stream has reached their start. Otherwise, or when they cannot be applied, wait
        (briefly) for the stream: it wakes this thread when it applies the revision (no
        polling: with a hundred workers on two cores every needless wake-up delays the others).
        Returns at once when the cache does not serve the session live (reads then go to the
        store). A stream still behind after ``CATCH_UP_TIMEOUT`` loses its view, so the call's
        reads go to the store, never to the older values the cache holds.
        """
        cache, session_id = self.cache, self.session.session_id
        if (cache.revision(session_id) or 0) >= revision:
            return  # every call after the first since a change: nothing to unpickle
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        if changes is not None:
            updates = loads(changes.updates)
            if cache.catch_up(session_id, changes.after, updates, revision):
                return
            if cache.wait_revision(session_id, changes.after, CATCH_UP_TIMEOUT) and (
                cache.catch_up(session_id, changes.after, updates, revision)
            ):
                return
        if not cache.wait_revision(session_id, revision, max(0.0, deadline - time.monotonic())):
            cache.resync(session_id)  # still behind: this call reads from the store
