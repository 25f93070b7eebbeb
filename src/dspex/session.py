"""Layer 3: dspex.Session, the session a program runs in, and current_session().

A Session is a :class:`~dspex.state.SessionContext` with a lifecycle: it opens a provider
(in-process by default, or a session store by address), makes itself current in a ContextVar
(and in ``dspy.context`` when DSPy is loaded, so DSPy's thread pools see it), and closes what it
opened on exit.

Promotion (DESIGN section 4): when an out-of-process component needs the session
(``dspex.Remote``, or an explicit :meth:`Session.promote`), an in-process session starts an
embedded session-store server that serves **the very provider the session already uses**. Nothing
is copied, so every variable keeps its value, version, history and revision exactly, and locks,
dependency edges and open watches carry on untouched. The session itself keeps calling that
provider directly: the store server adds transport only (DESIGN section 1), so in-process reads
and writes stay as fast as before, while workers reach the same store over gRPC. Only
``session.backend`` (now ``"session_store"``) and ``session.address`` change.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any, NamedTuple

from dspex.errors import SessionClosedError, SessionError, SessionNotFoundError
from dspex.state import LocalProvider, SessionContext, StateProvider
from dspex.state.client.connect import open_store, tool_link
from dspex.state.core.context import require_owner
from dspex.state.core.heartbeat import SessionHeartbeat
from dspex.state.core.tool_model import ToolHandler, ToolInfo
from dspex.state.core.tools import SessionTools

__all__ = ["Session", "current_session"]

_current: ContextVar[Session | None] = ContextVar("dspex_session", default=None)

_entries: ContextVar[tuple[_Entry, ...]] = ContextVar("dspex_session_entries", default=())
"""This context's open ``with session:`` blocks, innermost last (see :meth:`Session.__enter__`)."""

_STORE_SCHEMES = ("grpc://", "grpcs://", "unix://", "unix:")
_BARE_HOST_PORT = re.compile(r"[^/\s]+:[0-9]{1,5}")

_DSPY_SETTINGS = "dspy.dsp.utils.settings"
_DSPY_KEY = "dspex_session"

_entered_before_dspy = False
"""Set once a session is entered while DSPy is not loaded: only then must
:func:`current_session` check that DSPy's overlay has it (keeps the common path at one lookup)."""


def current_session() -> Session:
    """Return the innermost active session.

    Looks at this context first, then at ``dspy.context(dspex_session=...)`` (which DSPy copies
    into ``dspy.Parallel`` and ``Evaluate`` threads). Plain ``threading.Thread`` targets need
    ``contextvars.copy_context().run``. A session found in this context is also put into DSPy's
    overlay if it is missing there (DSPy was imported after the session was entered), so thread
    pools started from here reach it.

    Raises:
        SessionError: no session is active.
    """
    session = _current.get()
    if session is not None:
        if _entered_before_dspy and _DSPY_SETTINGS in sys.modules:
            _offer_to_dspy(session)
        return session
    if "dspy" in sys.modules:
        session = sys.modules["dspy"].settings.get(_DSPY_KEY)
    if not isinstance(session, Session):
        raise SessionError("no active dspex session; wrap the code in `with dspex.Session(): ...`")
    return session


def _open_store(
    store: str | StateProvider | None, token: str | None = None
) -> tuple[StateProvider, str]:
    if isinstance(store, str) and not _is_store_address(store):
        raise SessionError(
            f"store address {store!r} not understood; use 'grpc://HOST:PORT' (or 'HOST:PORT'), "
            "'grpcs://HOST:PORT' or 'unix:///PATH' (or pass a provider object, or None for "
            "in-process)"
        )
    provider = open_store(store, token=token)
    return provider, "local" if isinstance(provider, LocalProvider) else "session_store"


def _is_store_address(text: str) -> bool:
    """Whether ``text`` looks like a store address: a known scheme, or a bare ``HOST:PORT`` as
    the CLI and ``SessionContext.connect`` take it (checked in full when the client opens)."""
    return text.startswith(_STORE_SCHEMES) or _BARE_HOST_PORT.fullmatch(text) is not None


def _open_session(
    provider: StateProvider, session_id: str | None, create: bool, ttl: float | None
) -> str:
    """Create (``create``) or join ``session_id`` in ``provider``; returns the session id."""
    if create:
        return provider.create_session(session_id, ttl=ttl)  # an existing id is joined
    assert session_id is not None
    try:
        provider.get_session(session_id)  # joining: fail early if it does not exist
    except SessionNotFoundError as exc:
        raise SessionNotFoundError(
            f"{exc.message} (dspex.Session(store, session_id={session_id!r}, create=True) "
            "creates it when missing)",
            **exc.details,
        ) from exc
    return session_id


# Longest unix socket path the kernel accepts is 107 bytes on Linux (103 on macOS).
_MAX_SOCKET_PATH = 100

PemInput = str | bytes | Path
"""PEM bytes, or the path of a PEM file (as ``dspex serve --tls-cert`` takes)."""

_TLS_CA_ENV = "DSPEX_TLS_CA"


class _StoreAccess(NamedTuple):
    """What another process needs to reach a session's store."""

    address: str
    token: str | None
    ca: bytes | None  # the CA certificate (PEM) to trust; None: plaintext or the usual roots


class _PromotionTls(NamedTuple):
    """TLS for the store a promoted session embeds: the server's certificate and key (a
    ``ServerTls``, loaded with grpc only when TLS is asked for) and the CA (PEM) its clients
    trust."""

    server: Any
    ca: bytes


def _promotion_tls(
    store: object, cert: PemInput | None, key: PemInput | None, ca: PemInput | None
) -> _PromotionTls | None:
    """Load ``Session(tls_cert=, tls_key=, tls_ca=)``; None when none was given.

    Raises:
        SessionError: only one of cert and key, or TLS for a session on a store address.
        StoreError: a file cannot be read or is not PEM.
    """
    if cert is None and key is None and ca is None:
        return None
    if isinstance(store, str):
        raise SessionError(
            "tls_cert/tls_key/tls_ca configure the store an in-process session starts when "
            f"it is promoted; this session is opened on {store!r}, which has its own TLS "
            f"(use a grpcs:// address and trust its CA with ${_TLS_CA_ENV})"
        )
    if cert is None or key is None:
        raise SessionError(
            "tls_cert and tls_key go together (like `dspex serve --tls-cert/--tls-key`): give "
            "both, plus tls_ca when the certificate is not self-signed"
        )
    from dspex.state.store import ServerTls, read_pem

    server = ServerTls.load(cert, key)
    root = ca if ca is not None else os.environ.get(_TLS_CA_ENV) or server.cert
    return _PromotionTls(server, read_pem(root, "CA certificate (tls_ca)"))


def _reachable_at(provider: object) -> _StoreAccess | None:
    """The store address (and token) a provider already talks to, if it is a store client.

    Looks through wrappers such as ``CachedProvider`` (``.inner``).
    """
    for _ in range(4):
        address = getattr(provider, "address", None)
        if isinstance(address, str):
            token = getattr(provider, "token", None)
            return _StoreAccess(address, token if isinstance(token, str) else None, None)
        provider = getattr(provider, "inner", None)
        if provider is None:
            break
    return None


class _EmbeddedStore:
    """A session-store server in this process, serving the session's own provider.

    It listens on a unix socket inside a private (0700) temporary directory, so only this user
    can reach it and no token is needed; given a ``host`` (other machines must reach it), TLS,
    or where unix sockets cannot be used, it listens on a TCP port of that host (loopback by
    default) and requires a random bearer token instead (with TLS: over ``grpcs://``).
    """

    def __init__(
        self, provider: StateProvider, host: str | None = None, tls: _PromotionTls | None = None
    ) -> None:
        # Imported here: promotion is the first time this process needs grpc.
        from dspex.state.store import StoreServer

        self.token: str | None = None
        self.ca = None if tls is None else tls.ca
        self._dir: str | None = None
        bracketed = f"[{host}]" if host and ":" in host and not host.startswith("[") else host
        address = f"{bracketed or '127.0.0.1'}:0"  # an IPv6 host goes in brackets
        if host is None and tls is None and hasattr(os, "getuid"):  # POSIX: unix sockets
            self._dir = tempfile.mkdtemp(prefix="dspex-")  # created with mode 0700
            path = os.path.join(self._dir, "store.sock")
            if len(path) <= _MAX_SOCKET_PATH:
                address = f"unix://{path}"
        if not address.startswith("unix://"):
            self.token = secrets.token_urlsafe(24)
        try:
            server_tls = None if tls is None else tls.server
            self.server = StoreServer.start(provider, address, token=self.token, tls=server_tls)
        except BaseException:
            self._remove_dir()
            raise
        self.address = self.server.address

    def stop(self) -> None:
        """Stop listening (in-flight calls get a short grace) and remove the socket directory."""
        try:
            self.server.stop(grace=0.5)
        finally:
            self._remove_dir()

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _check_reachable_from(host: str | None, store: _StoreAccess | None, session_id: str) -> None:
    """Refuse to promote for other machines a session already bound to a unix socket."""
    if host is None or store is None or not store[0].startswith("unix:"):
        return
    raise SessionError(
        f"session {session_id!r} is already reachable only on this machine ({store[0]}), so "
        f"it cannot also listen on {host}; promote it with host= before anything else uses it "
        "(create the Ray Remote first), or open the session on a `dspex serve` TCP address",
        session_id=session_id,
    )


class _Entry(NamedTuple):
    """One ``with session:`` block: the session and the token restoring the previous one."""

    session: Session
    token: Token[Session | None]


def _offer_to_dspy(session: Session) -> None:
    """Make ``session`` the one in DSPy's per-context settings overlay, in this context.

    DSPy copies that overlay into ``dspy.Parallel``/``Evaluate`` threads and ``asyncify``, so
    the session reaches them. Only our key is changed: ``dspy.context(...)`` would also
    snapshot the global settings, hiding a later ``dspy.configure(lm=...)`` made inside the
    session. Called on entry when DSPy is loaded, and by :func:`current_session` otherwise
    (DSPy imported inside the ``with`` block).
    """
    overlay = sys.modules[_DSPY_SETTINGS].thread_local_overrides
    current = overlay.get()
    if current.get(_DSPY_KEY) is not session:
        overlay.set(type(current)({**current, _DSPY_KEY: session}))


def _withdraw_from_dspy(session: Session, outer: Session | None) -> None:
    """Undo :func:`_offer_to_dspy` in this context: the overlay names ``outer`` again."""
    settings = sys.modules.get(_DSPY_SETTINGS)
    if settings is None:
        return
    overlay = settings.thread_local_overrides
    current = overlay.get()
    if current.get(_DSPY_KEY) is not session:
        return
    restored = {key: value for key, value in current.items() if key != _DSPY_KEY}
    if outer is not None:
        restored[_DSPY_KEY] = outer
    overlay.set(type(current)(restored))


class Session(SessionContext):
    """A session of typed, versioned, watchable variables.

    Args:
        store: ``None`` for an in-process session; ``"grpc://host:port"`` (or
            ``"host:port"``), ``"grpcs://host:port"`` or ``"unix:///path"`` for a session
            store; or a provider object.
        session_id: the session's name: join this existing session (or, with ``create=True``,
            create it if the store does not have it yet). None: a new session with a random id.
        create: create ``session_id`` when it does not exist (create-or-join; several processes
            may do this at once and all end up in one session).
        keep: keep the session in the store when this object closes (the last ``with`` block
            exits), so that later processes can join it. Default: a named session
            (``session_id`` given) is kept, a new random one is closed. A kept session lives
            until ``dspex sessions close`` or, if it has a TTL, until no process heartbeats it
            for that long. Needs a store: an in-process session ends with its process.
        ttl: seconds without heartbeat after which the store expires the session. A session
            this object creates (new, or ``create=True``) with a TTL (its own, or the store's
            default) is kept alive by a heartbeat every ``ttl / 3`` seconds until it is closed.
        token: bearer token for a store address that requires one (default: ``$DSPEX_TOKEN``).
        owner: when joining (``session_id``), refuse unless this principal created the session
            (``PermissionDeniedError``): a session someone else pre-created under an agreed id
            is never used by mistake.
        tls_cert, tls_key: serve TLS from the store this in-process session starts when it is
            promoted (``dspex.Remote``, :meth:`promote`): PEM certificate chain and private
            key, paths or bytes, as ``dspex serve --tls-cert/--tls-key``. The store then
            listens on TCP (``grpcs://``, with a random bearer token), never a unix socket.
        tls_ca: the CA certificate (PEM) that signed ``tls_cert``, which workers and this
            process's own tool client trust (:attr:`store_ca`; default ``$DSPEX_TLS_CA``, else
            ``tls_cert`` itself, right for a self-signed certificate).

    Raises:
        SessionError: ``keep=True`` without a store, or a store address not understood;
            ``tls_cert`` without ``tls_key`` (or the reverse), or TLS options with a store
            address (its TLS is the store's own).
        StoreError: a TLS file cannot be read or is not PEM.
        SessionNotFoundError: ``session_id`` does not exist and ``create`` is False.
        SessionClosedError: ``session_id`` was closed.
        StoreUnavailableError: the store cannot be reached.

    Examples:
        >>> import dspex
        >>> with dspex.Session() as session:
        ...     _ = session.register("temperature", float, 0.7, min=0.0, max=2.0)
        ...     _ = session.set("temperature", 0.2)
        ...     session.get("temperature")
        0.2
        >>> # in any number of processes: the first creates "support", the others join it
        >>> shared = dspex.Session("grpc://127.0.0.1:50051", session_id="support",
        ...                        create=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        store: str | StateProvider | None = None,
        *,
        session_id: str | None = None,
        create: bool = False,
        keep: bool | None = None,
        ttl: float | None = None,
        token: str | None = None,
        owner: str | None = None,
        tls_cert: PemInput | None = None,
        tls_key: PemInput | None = None,
        tls_ca: PemInput | None = None,
    ) -> None:
        self._promotion_tls = _promotion_tls(store, tls_cert, tls_key, tls_ca)
        if keep and store is None:
            raise SessionError(
                "keep=True needs a session store: an in-process session ends with its process; "
                "pass store='grpc://HOST:PORT' (a `dspex serve` address)"
            )
        self.keep = session_id is not None if keep is None else keep
        """Whether closing this object leaves the session open in its store."""
        provider, self.backend = _open_store(store, token)
        self._owns_provider = store is None or isinstance(store, str)
        creates = session_id is None or create
        try:
            joining = session_id is not None
            session_id = _open_session(provider, session_id, creates, ttl)
            if joining:
                require_owner(provider, session_id, owner)
        except BaseException:
            if self._owns_provider:  # do not leak a channel we opened for a failed join
                provider.close()
            raise
        super().__init__(provider, session_id)
        self._entered = 0  # open `with` blocks, over every thread and task
        self.closed = False
        self._store = _reachable_at(provider) if self.backend == "session_store" else None
        self._embedded: _EmbeddedStore | None = None
        self._promotion_lock = threading.Lock()
        self._on_close: list[Callable[[], None]] = []
        self._tools: SessionTools | None = None
        self._heartbeat = self._start_heartbeat(ttl) if creates else None

    def _start_heartbeat(self, ttl: float | None) -> SessionHeartbeat | None:
        """Beat for a session this object created with a TTL (given, or the store's default)."""
        if ttl is None and self.backend == "session_store":
            ttl = self.provider.get_session(self.session_id).ttl
        return None if ttl is None else SessionHeartbeat(self.provider, self.session_id, ttl / 3)

    @property
    def address(self) -> str | None:
        """Where other processes reach this session's store; None while it is in-process only.

        Set by :meth:`promote` for an in-process session, and from the start for a session
        opened on a store address.
        """
        return None if self._store is None else self._store.address

    @property
    def store_token(self) -> str | None:
        """The bearer token other processes need to reach :attr:`address` (None: no token)."""
        return None if self._store is None else self._store.token

    @property
    def store_ca(self) -> bytes | None:
        """The CA certificate (PEM) other processes trust to reach :attr:`address` over TLS:
        set for a session promoted with ``tls_cert``; None otherwise (plaintext, or a
        ``grpcs://`` store whose clients trust ``$DSPEX_TLS_CA`` or the system roots)."""
        return None if self._store is None else self._store.ca

    def promote(self, host: str | None = None) -> str:
        """Make this session reachable from other processes and return its store address.

        An in-process session starts an embedded session-store server that serves the provider
        the session already uses (so values, versions, history, revision, locks, dependencies
        and watches are the same objects, not copies), and ``backend`` becomes
        ``"session_store"``. The session keeps calling that provider directly, so local code
        runs as fast as before. A session that already lives in a store just returns its
        address. Idempotent; the server stops when the session closes. ``dspex.Remote`` calls
        this for you.

        Args:
            host: make it reachable from other machines too: the embedded server listens on
                a TCP port of this interface (e.g. the node IP a Ray cluster reaches) and
                requires a random bearer token (:attr:`store_token`), instead of a private unix
                socket. A session already in a TCP store returns that address.

        Raises:
            SessionClosedError: the session is closed.
            SessionError: ``host`` is given but the session is already reachable only on this
                machine (a unix socket).
            StoreError: the embedded server could not start.
        """
        with self._promotion_lock:
            if self.closed:
                raise SessionClosedError(
                    f"session {self.session_id!r} is closed; it cannot be promoted",
                    session_id=self.session_id,
                )
            _check_reachable_from(host, self._store, self.session_id)
            if self._store is None:
                embedded = _EmbeddedStore(self.provider, host, self._promotion_tls)
                self._embedded = embedded
                self._store = _StoreAccess(embedded.address, embedded.token, embedded.ca)
                self.backend = "session_store"
                if self._tools is not None:  # serve the tools registered so far
                    self._tools.connect(tool_link(self.provider, *self._store))
            return self._store.address

    # -- tools (``@dspex.tool`` registers; every process of the session lists and calls) ---

    def _tool_table(self) -> SessionTools:
        with self._promotion_lock:
            if self._tools is None:
                if self.closed:
                    raise SessionClosedError(
                        f"session {self.session_id!r} is closed", session_id=self.session_id
                    )
                tools = SessionTools(self.session_id)
                if self._store is not None:
                    tools.connect(tool_link(self.provider, *self._store))
                self._tools = tools
                self._on_close.append(tools.close)
            return self._tools

    def register_tool(
        self,
        name: str,
        handler: ToolHandler,
        *,
        description: str = "",
        parameters: Mapping[str, Any] | None = None,
    ) -> ToolInfo:
        """Register a tool that this process owns and runs (``@dspex.tool`` calls this).

        ``handler(arguments)`` receives the arguments object and returns a JSON-compatible
        result. Every process of the session can call the tool once the session lives in a
        store; registering a name this process owns again replaces it.

        Raises:
            ToolError: the name is not valid.
            ToolExistsError: another connected process owns the name.
        """
        schema = dict(parameters) if parameters is not None else {"type": "object"}
        return self._tool_table().register(name, handler, description, schema)

    def list_tools(self) -> list[ToolInfo]:
        """Every tool of the session (name, description, parameters, owner), by name."""
        return self._tool_table().list()

    def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call a tool of the session; its owning process runs it.

        Raises:
            ToolNotFoundError: no such tool (the message lists the known ones).
            ToolArgumentsError: the arguments do not fit the tool; it did not run.
            ToolError: the tool raised; ``err.remote_traceback`` holds its traceback.
            ToolUnavailableError: its owner is not connected, or went away during the call.
            ToolTimeoutError: the owner did not answer within ``timeout`` seconds.
        """
        return self._tool_table().call(name, arguments or {}, timeout)

    def __enter__(self) -> Session:
        """Make this session current in this thread or task (re-entrant, from any number).

        Each ``with`` block restores, on exit, the session that was current in its own thread
        or task; the session closes when the last open block (over all of them) exits.

        Raises:
            SessionClosedError: the session is already closed.
        """
        with self._promotion_lock:
            if self.closed:
                raise SessionClosedError(
                    f"session {self.session_id!r} is closed (its last `with` block ended); "
                    "open a new dspex.Session, or keep one block open around the others",
                    session_id=self.session_id,
                )
            self._entered += 1
        _entries.set((*_entries.get(), _Entry(self, _current.set(self))))
        if _DSPY_SETTINGS in sys.modules:
            _offer_to_dspy(self)
        else:
            global _entered_before_dspy
            _entered_before_dspy = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._leave_context()
        with self._promotion_lock:
            self._entered -= 1
            last = self._entered <= 0
        if last:
            self.close()

    def _leave_context(self) -> None:
        """Restore the session that was current before this context's innermost entry."""
        entries = _entries.get()
        for index in range(len(entries) - 1, -1, -1):
            if entries[index].session is self:
                break
        else:  # entered in another thread or task, left here: nothing of ours to restore
            return
        entry = entries[index]
        remaining = entries[:index] + entries[index + 1 :]
        _entries.set(remaining)
        try:
            _current.reset(entry.token)
        except ValueError:  # a context copied after the entry: restore the value by hand
            old = entry.token.old_value
            _current.set(None if old is Token.MISSING else old)
        _withdraw_from_dspy(self, _current.get())

    def close(self) -> None:
        """Close the session in its store (unless ``keep``), and the provider if it opened it.

        Worker pools started on the session (``dspex.Remote``) are closed first, and an embedded
        store server started by :meth:`promote` is stopped.
        """
        with self._promotion_lock:
            if self.closed:
                return
            self.closed = True
        if self._heartbeat is not None:
            self._heartbeat.stop()
        for callback in reversed(self._on_close):
            callback()
        self._on_close.clear()
        if self._recomputer is not None:
            self._recomputer.stop()
        try:
            if not self.keep:
                with contextlib.suppress(SessionError):
                    self.provider.close_session(self.session_id)
        finally:
            if self._embedded is not None:
                self._embedded.stop()
            if self._owns_provider:
                self.provider.close()

    def __repr__(self) -> str:
        return f"Session(session_id={self.session_id!r}, backend={self.backend!r})"
