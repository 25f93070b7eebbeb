"""Layer 3: dspex.Session, the session a program runs in, and current_session().

A Session is a :class:`~dspex.state.SessionContext` with a lifecycle: it opens a provider
(in-process by default, or a session store by address), makes itself current in a ContextVar
(and in ``dspy.context`` when DSPy is loaded, so DSPy's thread pools see it), and closes what it
opened on exit.
"""

from __future__ import annotations

import contextlib
import sys
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from dspex.errors import SessionError
from dspex.state import LocalProvider, SessionContext, StateProvider

__all__ = ["Session", "current_session"]

_current: ContextVar[Session | None] = ContextVar("dspex_session", default=None)

_STORE_SCHEMES = ("grpc://", "unix://", "unix:")


def current_session() -> Session:
    """Return the innermost active session.

    Looks at this context first, then at ``dspy.context(dspex_session=...)`` (which DSPy copies
    into ``dspy.Parallel`` and ``Evaluate`` threads). Plain ``threading.Thread`` targets need
    ``contextvars.copy_context().run``.

    Raises:
        SessionError: no session is active.
    """
    session = _current.get()
    if session is None and "dspy" in sys.modules:
        session = sys.modules["dspy"].settings.get("dspex_session")
    if session is None:
        raise SessionError("no active dspex session; wrap the code in `with dspex.Session(): ...`")
    return session


def _open_store(store: str | StateProvider | None) -> tuple[StateProvider, str]:
    if store is None:
        return LocalProvider(), "local"
    if isinstance(store, str):
        if not store.startswith(_STORE_SCHEMES):
            raise SessionError(
                f"store address {store!r} not understood; use 'grpc://HOST:PORT' or "
                "'unix:///PATH' (or pass a provider object, or None for in-process)"
            )
        # Imported here so `import dspex` and local sessions never load grpc.
        from dspex.state._session_store import SessionStoreProvider

        return SessionStoreProvider(store), "session_store"
    backend = "local" if isinstance(store, LocalProvider) else "session_store"
    return store, backend


class Session(SessionContext):
    """A session of typed, versioned, watchable variables.

    Args:
        store: ``None`` for an in-process session; ``"grpc://host:port"`` or
            ``"unix:///path"`` for a session store; or a provider object.
        session_id: join this existing session instead of creating a new one.
        ttl: seconds without heartbeat after which a session store may expire the session.

    Examples:
        >>> import dspex
        >>> with dspex.Session() as session:
        ...     _ = session.register("temperature", float, 0.7, min=0.0, max=2.0)
        ...     _ = session.set("temperature", 0.2)
        ...     session.get("temperature")
        0.2
    """

    def __init__(
        self,
        store: str | StateProvider | None = None,
        *,
        session_id: str | None = None,
        ttl: float | None = None,
    ) -> None:
        provider, self.backend = _open_store(store)
        self._owns_provider = store is None or isinstance(store, str)
        self._owns_session = session_id is None
        try:
            if session_id is None:
                session_id = provider.create_session(ttl=ttl)
            else:
                provider.get_session(session_id)  # joining: fail early if it does not exist
        except BaseException:
            if self._owns_provider:  # do not leak a channel we opened for a failed join
                provider.close()
            raise
        super().__init__(provider, session_id)
        self._tokens: list[tuple[Token[Session | None], Any]] = []
        self.closed = False

    def __enter__(self) -> Session:
        dspy_context: Any = None
        if "dspy" in sys.modules:
            dspy_context = sys.modules["dspy"].context(dspex_session=self)
            dspy_context.__enter__()
        self._tokens.append((_current.set(self), dspy_context))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, dspy_context = self._tokens.pop()
        _current.reset(token)
        if dspy_context is not None:
            dspy_context.__exit__(exc_type, exc, tb)
        if not self._tokens:
            self.close()

    def close(self) -> None:
        """Close the session if this object created it, and the provider if it opened it."""
        if self.closed:
            return
        self.closed = True
        if self._recomputer is not None:
            self._recomputer.stop()
        if self._owns_session:
            with contextlib.suppress(SessionError):
                self.provider.close_session(self.session_id)
        if self._owns_provider:
            self.provider.close()

    def __repr__(self) -> str:
        return f"Session(session_id={self.session_id!r}, backend={self.backend!r})"
