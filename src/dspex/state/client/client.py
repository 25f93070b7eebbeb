"""Client side: SessionStoreProvider, the sync gRPC client of a session store (a StateProvider).

Every method is one call: convert the arguments, call the store, convert the answer; errors come
back as the same dspex error classes the store raised (``grpc.RpcError`` never escapes). A watch
is the server stream, read into the same bounded queue, with the same lag rule, as a local
watch: live watches share one stream per session on the client's background stream loop; a
dedicated one (initial records, a resume) is read by the thread iterating it, or by a thread of
its own once polled with a timeout or delivering to a cache. The provider pickles: the
channel is dropped and rebuilt lazily in the new process (create it after a worker process
starts; never fork with a live channel).

Optimization locks: the client keeps one ``HoldLocks`` stream open from its first
``acquire_lock`` on, so the store releases its locks as soon as this process dies or its
connection breaks, not only when their leases run out. Every write carries the caller's
:data:`~dspex.state.current_lock_owner` token, so ``with session.optimizing(...)`` works
unchanged over the store.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Collection, Mapping
from typing import Any

from dspex._model import SessionInfo, VariableRecord, VariableSpec
from dspex.errors import (
    ConstraintError,
    PermissionDeniedError,
    StoreError,
    StoreProtocolError,
    StoreUnavailableError,
    VariableTypeError,
)
from dspex.state.client import convert
from dspex.state.client.shared_watch import SharedWatchStream
from dspex.state.client.streams import DedicatedStream, HolderStream, OnEnd, OnEvent, StreamLoop
from dspex.state.client.watch import StoreWatchReader
from dspex.state.core.contract import UpdateResults
from dspex.state.core.identity import current_lock_owner, current_writer
from dspex.state.core.watch import VariableWatch
from dspex.state.core.writes import abort_batch
from dspex.state.wire.channel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HOLDER_KEY,
    LOCK_OWNER_KEY,
    WRITER_KEY,
    connect,
    encoded_unary,
    parse_address,
    reconnect_in_background,
    wait_ready,
)
from dspex.state.wire.status import translate_rpc_errors
from dspex.state.wire.tls import ClientTls, PemSource

__all__ = ["TOKEN_ENV", "SessionStoreProvider"]

TOKEN_ENV = "DSPEX_TOKEN"
"""Environment variable holding the bearer token when none is passed."""


class _Default:
    """Marks "use the provider's call timeout" (None means no deadline)."""


_DEFAULT = _Default()


def _client_tls(
    tls: bool,
    root_cert: PemSource | None,
    client_cert: PemSource | None,
    client_key: PemSource | None,
) -> ClientTls | None:
    """The TLS material for a ``grpcs://`` address (None for plaintext addresses).

    Raises:
        StoreError: TLS material was given for a plaintext address, or cannot be read.
    """
    if not tls:
        if root_cert is not None or client_cert is not None or client_key is not None:
            raise StoreError(
                "TLS certificates were given for a plaintext address; use grpcs://HOST:PORT"
            )
        return None
    return ClientTls.load(root_cert, client_cert, client_key)


class SessionStoreProvider:
    """A StateProvider whose sessions live in a session store reached over gRPC.

    Args:
        address: ``grpc://host:port``, ``host:port``, ``grpcs://host:port`` (TLS),
            ``unix:///abs/path`` or ``unix:rel/path``.
        token: bearer token, if the store requires one (default: ``$DSPEX_TOKEN``).
        timeout: seconds each call may take before it fails with ``StoreUnavailableError``.
        max_message_bytes: largest message sent or received.
        root_cert: with ``grpcs://``: the PEM root certificate to trust (path or bytes;
            default ``$DSPEX_TLS_CA``, else the system roots).
        client_cert, client_key: with ``grpcs://``: the client certificate and key for a
            store that requires them (default ``$DSPEX_TLS_CERT`` / ``$DSPEX_TLS_KEY``).

    Raises:
        StoreError: the address is not understood, or TLS material cannot be read (nothing
            is connected yet: the first call reports an unreachable store as
            ``StoreUnavailableError``).

    Examples:
        >>> store = SessionStoreProvider("grpc://127.0.0.1:50051")  # doctest: +SKIP
        >>> sid = store.create_session()                            # doctest: +SKIP
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        root_cert: PemSource | None = None,
        client_cert: PemSource | None = None,
        client_key: PemSource | None = None,
    ) -> None:
        self._parsed = parse_address(address)
        self.address = self._parsed.url
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._tls = _client_tls(self._parsed.tls, root_cert, client_cert, client_key)
        self._auth: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {self.token}"),) if self.token else ()
        )
        self._errors = translate_rpc_errors(self.address)
        self._write_errors = translate_rpc_errors(self.address, writes=True)
        self._lock = threading.Lock()
        self._channel: Any = None
        self._stub: Any = None
        self._reconnecting: Any = None  # the channel a reconnect_in_background thread pings
        self._streams: set[StoreWatchReader] = set()
        self._shared: dict[str, SharedWatchStream] = {}
        self._stream_loop: StreamLoop | None = None
        self._holder: HolderStream | None = None
        self._holder_lock = threading.Lock()

    # -- connection and pickling ------------------------------------------------------------

    def _connect(self) -> Any:
        with self._lock:
            if self._stub is None:
                channel, stub = connect(self._parsed, self.max_message_bytes, self._tls)
                # The hot read: its request bytes and decoded records are cached (convert).
                stub.GetVariable = encoded_unary(channel, "GetVariable")
                self._channel, self._stub = channel, stub
            return self._stub

    def _streams_loop(self) -> StreamLoop:
        with self._lock:
            return self._streams_loop_locked()

    def _streams_loop_locked(self) -> StreamLoop:
        """The stream loop, started on first use (the caller holds the lock, so a concurrent
        ``close`` cannot close it between being fetched and used)."""
        if self._stream_loop is None:
            self._stream_loop = StreamLoop(self._parsed, self.max_message_bytes, self._tls)
        return self._stream_loop

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the store is reachable.

        Raises:
            StoreUnavailableError: not reachable within ``timeout`` (default: the call timeout).
        """
        self._connect()
        wait_ready(self._channel, self._parsed, self.timeout if timeout is None else timeout)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "token": self.token,
            "timeout": self.timeout,
            "max_message_bytes": self.max_message_bytes,
            "tls": self._tls,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        tls: ClientTls | None = state.get("tls")
        self.__init__(  # type: ignore[misc]
            state["address"],
            token=state["token"],
            timeout=state["timeout"],
            max_message_bytes=state["max_message_bytes"],
            root_cert=None if tls is None else tls.root_cert,
            client_cert=None if tls is None else tls.client_cert,
            client_key=None if tls is None else tls.client_key,
        )

    def __repr__(self) -> str:
        return f"SessionStoreProvider({self.address!r})"

    def _call(
        self,
        method: str,
        request: Any,
        *,
        writes: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
        timeout: float | _Default | None = _DEFAULT,
    ) -> Any:
        stub = self._stub or self._connect()
        metadata = self._auth
        if writes:
            owner = current_lock_owner.get()
            mine = ((LOCK_OWNER_KEY, owner),) if owner else ()
            metadata = ((WRITER_KEY, current_writer.get()), *mine, *extra, *self._auth)
        deadline = self.timeout if isinstance(timeout, _Default) else timeout
        try:
            with self._write_errors if writes else self._errors:
                return getattr(stub, method)(request, timeout=deadline, metadata=metadata or None)
        except StoreUnavailableError as exc:
            if not exc.details.get("closed"):
                self._reconnect()
            raise

    def _reconnect(self) -> None:
        """After a call found the store unreachable: make the channel find it again as soon as
        it listens (see :func:`~dspex.state.wire.channel.reconnect_in_background`). The thread
        holds the client weakly: one dropped without ``close()`` stops it too."""
        with self._lock:
            channel, stub = self._channel, self._stub
            if stub is None or self._reconnecting is channel:
                return
            self._reconnecting = channel
        client = weakref.ref(self)

        def current() -> bool:
            alive = client()
            return alive is not None and alive._channel is channel

        def reconnected() -> None:
            alive = client()
            if alive is not None:
                with alive._lock:
                    if alive._reconnecting is channel:
                        alive._reconnecting = None

        reconnect_in_background(stub, current, reconnected)

    # -- sessions -------------------------------------------------------------------------

    def ping(self, message: str = "") -> str:
        """Round-trip ``message`` through the store (liveness check)."""
        return convert.ping_result(self._call("Ping", convert.ping_request(message)))

    def create_session(self, session_id: str | None = None, *, ttl: float | None = None) -> str:
        request = convert.create_session_request(session_id, ttl)
        return convert.session_id_result(self._call("CreateSession", request))

    def get_session(self, session_id: str) -> SessionInfo:
        request = convert.session_request("GetSession", session_id)
        return convert.session_result(self._call("GetSession", request))

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, oldest first, following the store's pages (each response bounded).

        Raises:
            StoreProtocolError: the store's pages do not advance.
        """
        sessions: list[SessionInfo] = []
        token, seen = "", set()
        while True:
            response = self._call("ListSessions", convert.list_sessions_request(token))
            page, token = convert.sessions_result(response)
            sessions.extend(page)
            if not token:
                return sessions
            if token in seen or not page:
                raise StoreProtocolError(
                    f"session store {self.address} repeated a ListSessions page; "
                    "client and server versions may differ"
                )
            seen.add(token)

    def heartbeat(self, session_id: str) -> None:
        self._call("Heartbeat", convert.session_request("Heartbeat", session_id))

    def close_session(self, session_id: str) -> None:
        self._call("CloseSession", convert.session_request("CloseSession", session_id))

    # -- variables ------------------------------------------------------------------------

    def register_variable(
        self,
        session_id: str,
        name: str,
        spec: VariableSpec,
        value: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> VariableRecord:
        request = convert.register_variable_request(session_id, name, spec, value, metadata)
        return convert.record_result(self._call("RegisterVariable", request, writes=True))

    def get_variable(self, session_id: str, name: str) -> VariableRecord:
        request = convert.get_variable_request(session_id, name)
        return convert.get_variable_result(self._call("GetVariable", request))

    def get_variables(self, session_id: str, names: Collection[str]) -> dict[str, VariableRecord]:
        request = convert.get_variables_request(session_id, names)
        records = convert.records_result(self._call("GetVariables", request))
        return {record.name: record for record in records}

    def set_variable(
        self, session_id: str, name: str, value: Any, *, expected_version: int | None = None
    ) -> VariableRecord:
        request = convert.set_variable_request(session_id, name, value, expected_version)
        return convert.record_result(self._call("SetVariable", request, writes=True))

    def update_variables(
        self,
        session_id: str,
        values: Mapping[str, Any],
        *,
        atomic: bool = False,
        expected_versions: Mapping[str, int] | None = None,
    ) -> UpdateResults:
        try:
            request = convert.update_variables_request(
                session_id, values, atomic, expected_versions
            )
        except VariableTypeError:  # a value no store can be sent: refuse it per name
            unsendable = convert.unsendable_values(values)
            return self._update_unsendable(session_id, values, unsendable, atomic,
                                           expected_versions)  # fmt: skip
        return convert.update_results(self._call("UpdateVariables", request, writes=True))

    def _update_unsendable(
        self,
        session_id: str,
        values: Mapping[str, Any],
        unsendable: UpdateResults,
        atomic: bool,
        expected_versions: Mapping[str, int] | None,
    ) -> UpdateResults:
        """A batch with values no store can be sent: those names fail with their
        ``VariableTypeError`` per name, as in a local provider, not the whole call. An atomic
        batch applies nothing; the others are applied independently."""
        rest = {name: value for name, value in values.items() if name not in unsendable}
        if atomic or not rest:
            self.get_session(session_id)  # a session that is not open fails the whole call
            return abort_batch(values, unsendable) if atomic else dict(unsendable)
        applied = self.update_variables(session_id, rest, expected_versions=expected_versions)
        return {name: unsendable.get(name) or applied[name] for name in values}

    def list_variables(self, session_id: str, pattern: str = "*") -> list[VariableRecord]:
        request = convert.list_variables_request(session_id, pattern)
        return convert.records_result(self._call("ListVariables", request))

    def delete_variable(self, session_id: str, name: str) -> None:
        request = convert.variable_request("DeleteVariable", session_id, name)
        self._call("DeleteVariable", request, writes=True)

    def get_history(
        self, session_id: str, name: str, limit: int | None = None
    ) -> list[VariableRecord]:
        request = convert.get_history_request(session_id, name, limit)
        return convert.records_result(self._call("GetHistory", request))

    def rollback_variable(self, session_id: str, name: str, version: int) -> VariableRecord:
        request = convert.rollback_variable_request(session_id, name, version)
        return convert.record_result(self._call("RollbackVariable", request, writes=True))

    def watch_variables(
        self,
        session_id: str,
        names: Collection[str] = (),
        *,
        after_revision: int | None = None,
        include_initial: bool = False,
        linger: float = 0.0,
    ) -> VariableWatch:
        """Watch the session (see :class:`~dspex.state.StateProvider`).

        ``linger``, only here: seconds (at most 1) the store may hold news for this watch, to
        send it with what follows meanwhile; for a watcher that learns of changes another way
        first (a ``dspex.Remote`` worker's cache gets them with its calls). A lingering watch
        has its own stream.
        """
        if not 0 <= linger <= 1:
            raise ConstraintError(f"linger must be 0 to 1 seconds, got {linger!r}")
        plain = after_revision is None and not include_initial and not linger
        if plain and (not self.token or not names):
            shared = self._watch_shared(session_id, frozenset(names))
            if shared is not None:
                return shared
        request = convert.watch_variables_request(
            session_id, names, after_revision, include_initial, linger
        )
        reader = StoreWatchReader(self._open_dedicated, self.address, self._forget)
        with self._lock:
            self._streams.add(reader)
        return reader.start(request, self.timeout)

    def _open_dedicated(self, request: Any, on_event: OnEvent, on_end: OnEnd) -> DedicatedStream:
        """Start a dedicated WatchVariables call, read by its consumer (``DedicatedStream``)."""
        stub = self._stub or self._connect()
        return DedicatedStream(
            stub.WatchVariables(request, metadata=self._auth or None),
            self._errors, on_event, on_end,
            name=f"dspex-watch-{request.session_id[:12]}",
        )  # fmt: skip

    def _watch_shared(self, session_id: str, names: frozenset[str]) -> VariableWatch | None:
        """A live watch on the session's shared stream; None to use a dedicated stream.

        With a token, only unnamed watches share (a named one keeps the store's per-name
        ``observe`` check). A watch joining an open stream reads the head revision first.
        """
        with self._lock:
            stream = self._shared.get(session_id)
            first = stream is None or stream.ended
            if stream is None or stream.ended:
                stream = SharedWatchStream(
                    self._streams_loop_locked(),
                    session_id,
                    address=self.address,
                    metadata=self._auth,
                    release=self._release_shared,
                )
                self._shared[session_id] = stream
            stream.pending += 1
        try:
            stream.wait_started(self.timeout)
            head = 0 if first else self.get_session(session_id).revision
            return stream.join(names, head)
        except PermissionDeniedError:
            return None  # may observe but not read the head: a dedicated stream instead
        finally:
            with self._lock:
                stream.pending -= 1
            self._release_shared(stream)

    def _release_shared(self, stream: SharedWatchStream) -> None:
        """Cancel ``stream`` once no watch uses it; forget it once it ended."""
        with self._lock:
            unused = stream.idle
            if (unused or stream.ended) and self._shared.get(stream.session_id) is stream:
                del self._shared[stream.session_id]
        if unused and not stream.ended:
            stream.stop()

    # -- dependencies ---------------------------------------------------------------------

    def add_dependency(self, session_id: str, upstream: str, downstream: str) -> None:
        self._call("AddDependency", convert.dependency_request(session_id, upstream, downstream))

    def get_dependents(self, session_id: str, name: str) -> list[str]:
        request = convert.dependents_request(session_id, name)
        return convert.names_result(self._call("GetDependents", request))

    def get_dependencies(self, session_id: str) -> list[tuple[str, str]]:
        request = convert.dependencies_request(session_id)
        return convert.edges_result(self._call("GetDependencies", request))

    # -- optimization locks ---------------------------------------------------------------

    def acquire_lock(
        self,
        session_id: str,
        name: str,
        *,
        owner: str,
        optimizer_id: str,
        lease: float = 30.0,
        policy: str = "fail",
        timeout: float | None = None,
    ) -> VariableRecord:
        request = convert.acquire_lock_request(
            session_id, name, owner, optimizer_id=optimizer_id, lease=lease, policy=policy,
            timeout=timeout,
        )  # fmt: skip
        waits = policy == "wait"
        deadline = None if waits and timeout is None else self.timeout + (timeout or 0.0)
        for attempt in (1, 2):
            holder = self._lock_holder()
            try:
                response = self._call(
                    "AcquireLock", request, writes=True, timeout=deadline,
                    extra=((HOLDER_KEY, holder.holder_id or ""),),
                )  # fmt: skip
            except StoreUnavailableError as exc:
                if attempt == 2 or not holder.ended or exc.details.get("closed"):
                    raise  # closed: this client was closed meanwhile, which ended both
                continue  # the holder stream broke meanwhile: open a new one and retry once
            return convert.record_result(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def release_lock(self, session_id: str, name: str, *, owner: str) -> VariableRecord:
        request = convert.release_lock_request(session_id, name, owner)
        return convert.record_result(self._call("ReleaseLock", request, writes=True))

    def renew_lock(
        self,
        session_id: str,
        name: str,
        *,
        owner: str,
        progress: Mapping[str, Any] | None = None,
    ) -> VariableRecord:
        request = convert.renew_lock_request(session_id, name, owner, progress)
        return convert.record_result(self._call("RenewLock", request, writes=True))

    def _lock_holder(self) -> HolderStream:
        """This client's HoldLocks stream, opened (again) if needed."""
        with self._holder_lock:
            holder = self._holder
            if holder is None or holder.ended:
                holder = HolderStream(self._streams_loop(), self._auth, self.timeout)
                self._holder = holder
            return holder

    def close(self) -> None:
        """Close the channels and streams; the store releases locks held through this client.

        Every watch this client opened ends normally, as a local provider's do when it closes
        (iteration stops, ``poll`` returns None): a thread blocked on one returns. The client
        stays usable: a later call connects again.
        """
        with self._holder_lock:
            holder, self._holder = self._holder, None
        if holder is not None:
            holder.stop()  # the store releases any lock still held through this client
        with self._lock:
            streams, self._streams = list(self._streams), set()
            shared, self._shared = list(self._shared.values()), {}
            channel, self._channel, self._stub = self._channel, None, None
            stream_loop, self._stream_loop = self._stream_loop, None
        for reader in streams:
            reader.close()  # each open watch ends normally: its consumer's loop stops
        for stream in shared:
            stream.close()
        if stream_loop is not None:
            stream_loop.close()
        if channel is not None:
            channel.close()

    def _forget(self, reader: StoreWatchReader) -> None:
        with self._lock:
            self._streams.discard(reader)
