"""Client side: the sync client of the store's ``ToolStore`` service, and an owner's serving loop.

:class:`ToolStoreClient` registers, lists and calls tools (one gRPC call each; errors come back
as dspex errors, never ``grpc.RpcError``). It shares the channel of the session's
:class:`~dspex.state.client.client.SessionStoreProvider` when there is one, so a worker keeps a
single connection to the store.

:class:`ToolServing` is what a process that owns tools runs: a background thread keeps the
``ServeTools`` stream open, runs each call it receives on a small thread pool (so concurrent
calls run concurrently) and answers with ``ReturnToolResult``. Each time the stream opens it
registers the owner's tools again, so after a broken connection or a restarted store the tools
are back as soon as the owner reconnects. The store binds the owner id to the serving key its
first stream was given (:attr:`ToolServing.serving_key`); registering, unregistering and
reconnecting carry it, so no other connection can act for this owner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from dspex.errors import (
    AccessError,
    DspexError,
    LimitExceededError,
    SessionError,
    StoreUnavailableError,
    ToolError,
)
from dspex.state.client.client import SessionStoreProvider
from dspex.state.core.contract import StateProvider
from dspex.state.core.tool_model import (
    CallOutcome,
    ToolFailure,
    ToolInfo,
    ToolSpecText,
    failure_from_exception,
)
from dspex.state.wire import tools as convert
from dspex.state.wire.channel import connect, parse_address
from dspex.state.wire.status import translate_rpc_errors
from dspex.state.wire.tls import ClientTls

__all__ = ["ToolServing", "ToolStoreClient"]

_log = logging.getLogger("dspex.tools")

_CALL_MARGIN: Final = 5.0
"""Seconds the gRPC deadline of CallTool exceeds the tool timeout (the store answers first)."""
_MAX_BACKOFF: Final = 2.0
"""Longest pause between reconnection attempts of a serving loop."""


def _store_behind(provider: object) -> SessionStoreProvider | None:
    """The store client a provider is or wraps (``CachedProvider.inner``), if any."""
    for _ in range(4):
        if isinstance(provider, SessionStoreProvider):
            return provider
        provider = getattr(provider, "inner", None)
        if provider is None:
            break
    return None


class ToolStoreClient:
    """Calls the ``ToolStore`` service of one store.

    Args:
        address: the store address (for error messages, and to connect when no channel is
            given).
        channel: an open gRPC channel to share (None: open one, closed by :meth:`close`).
        metadata: call metadata sent with every call (the bearer token).
        timeout: seconds each registration or listing call may take.
        tls: what to trust when connecting to a ``grpcs://`` address (default: as
            ``ClientTls.load()``, from ``$DSPEX_TLS_CA``...).
    """

    def __init__(
        self,
        address: str,
        *,
        channel: Any = None,
        metadata: tuple[tuple[str, str], ...] = (),
        timeout: float = 10.0,
        tls: ClientTls | None = None,
    ) -> None:
        self._own_channel = channel is None
        if channel is None:
            parsed = parse_address(address)
            if parsed.tls and tls is None:
                tls = ClientTls.load()
            channel, _ = connect(parsed, tls=tls)
        self.address = address
        self._channel = channel
        self._stub = convert.stub(channel)
        self.metadata = metadata
        self.timeout = timeout
        self._errors = translate_rpc_errors(address)
        self.serving_keys: dict[tuple[str, str], str] = {}
        """(session id, owner id) -> the serving key the store bound that owner id to; kept
        here, not per stream, so serving again after a failed start still holds it."""

    @classmethod
    def for_session(
        cls,
        provider: StateProvider,
        address: str,
        token: str | None,
        root_cert: bytes | None = None,
    ) -> ToolStoreClient:
        """A client for the store a session lives in, sharing its provider's channel if it
        has one (a worker's cached store client), else connecting to ``address`` (trusting
        ``root_cert`` over TLS)."""
        store = _store_behind(provider)
        if store is not None:
            # Same package: reuse the provider's channel and credentials (one connection).
            store._connect()
            return cls(store.address, channel=store._channel, metadata=store._auth)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        tls = None if root_cert is None else ClientTls.load(root_cert)
        return cls(address, metadata=metadata, tls=tls)

    def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        with self._errors:
            return getattr(self._stub, method)(
                request, timeout=timeout, metadata=self.metadata or None
            )

    def register_tool(
        self, session_id: str, owner: str, spec: ToolSpecText, *, key: str = ""
    ) -> ToolInfo:
        request = convert.register_request(session_id, owner, key, spec)
        return convert.info_result(self._call("RegisterTool", request, self.timeout))

    def unregister_tools(
        self,
        session_id: str,
        owner: str,
        names: Iterable[str] = (),
        *,
        key: str = "",
        timeout: float | None = None,
    ) -> int:
        request = convert.unregister_request(session_id, owner, key, names)
        deadline = self.timeout if timeout is None else timeout
        return convert.removed_result(self._call("UnregisterTools", request, deadline))

    def list_tools(self, session_id: str) -> list[ToolInfo]:
        request = convert.list_request(session_id)
        return convert.infos_result(self._call("ListTools", request, self.timeout))

    def call_tool(
        self, session_id: str, name: str, arguments_json: str, timeout: float | None
    ) -> CallOutcome:
        request = convert.call_request(session_id, name, arguments_json, timeout)
        deadline = None if timeout is None else timeout + _CALL_MARGIN
        return convert.call_result(self._call("CallTool", request, deadline))

    def return_result(
        self, session_id: str, owner: str, call_id: str, outcome: convert.Outcome
    ) -> bool:
        request = convert.return_request(session_id, owner, call_id, outcome)
        return convert.accepted_result(self._call("ReturnToolResult", request, self.timeout))

    def open_serving(self, session_id: str, owner: str, key: str = "") -> Any:
        """Open a ServeTools stream (iterate it inside ``errors``; cancel it to end it);
        ``key`` is the owner's serving key when it served before ("" the first time)."""
        request = convert.serve_request(session_id, owner, key)
        return self._stub.ServeTools(request, metadata=self.metadata or None)

    def serve(
        self,
        session_id: str,
        owner: str,
        specs: Callable[[], list[ToolSpecText]],
        run: Runner,
    ) -> ToolServing:
        """Serve ``owner``'s tools of the session (see :class:`ToolServing`); return once
        calls can arrive.

        Raises:
            SessionError, AccessError: the session is not open, or this caller may not serve.
            StoreUnavailableError: the store did not open the stream in time.
        """
        serving = ToolServing(self, session_id, owner, specs, run)
        serving.start()
        return serving

    @property
    def errors(self) -> translate_rpc_errors:
        """Context manager turning gRPC failures into dspex errors."""
        return self._errors

    def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._own_channel:
            self._channel.close()


Runner = Callable[[str, str], "convert.Outcome"]
"""``run(name, arguments_json) -> outcome``: runs one owned tool; never raises."""


class ToolServing:
    """Keeps an owner's ServeTools stream open and answers the calls it brings.

    Args:
        client: the store's tool client.
        session_id: the session whose tools are served.
        owner: this process's owner id.
        specs: returns the owner's tools, registered again each time the stream opens.
        run: runs one call.
        workers: most calls run at the same time.
    """

    def __init__(
        self,
        client: ToolStoreClient,
        session_id: str,
        owner: str,
        specs: Callable[[], list[ToolSpecText]],
        run: Runner,
        *,
        workers: int = 16,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.owner = owner
        self._specs = specs
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dspex-tool")
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: DspexError | None = None
        self._stream: Any = None
        self._thread = threading.Thread(target=self._loop, name="dspex-tool-serving", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Open the stream and register the tools; return once calls can arrive.

        Raises:
            SessionError, AccessError: the session is not open, or this caller may not serve.
            StoreUnavailableError: the store did not open the stream within ``timeout``.
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise StoreUnavailableError.stream_timeout(
                self.client.address, "open the tool stream", timeout
            )
        if self._failure is not None:
            self.stop()
            raise self._failure

    def _loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._serve_once()
            except (SessionError, AccessError) as exc:
                self._end(exc)  # retrying cannot help
                return
            except DspexError as exc:
                refused = not self._ready.is_set() and not isinstance(exc, StoreUnavailableError)
                if refused or exc.details.get("closed"):  # closed: its channel, for good
                    self._end(exc)
                    return
                _log.info("tool stream of %s ended (%s); reconnecting", self.owner, exc)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _end(self, exc: DspexError) -> None:
        if self._ready.is_set():
            _log.warning("tools of %s are no longer served: %s", self.owner, exc)
        else:
            self._failure = exc
            self._ready.set()

    def _serve_once(self) -> None:
        """Hold one stream until it ends. Raises the dspex error it ended with."""
        with self.client.errors:
            stream = self.client.open_serving(self.session_id, self.owner, self.serving_key)
        self._stream = stream
        if self._stop.is_set():
            stream.cancel()
        with self.client.errors:
            for message in stream:
                event = convert.serve_event(message)
                if event.kind == "started":
                    # The same key on each reconnect; a new one after a store restart.
                    self.client.serving_keys[(self.session_id, self.owner)] = event.serving_key
                    for spec in self._specs():
                        self.register(spec)
                    self._ready.set()
                elif event.kind == "call":
                    self._pool.submit(self._answer, event)

    @property
    def serving_key(self) -> str:
        """The secret the store bound this owner id to ("" before its first stream opened)."""
        return self.client.serving_keys.get((self.session_id, self.owner), "")

    def register(self, spec: ToolSpecText) -> ToolInfo:
        """Register (or replace) one tool of this owner, with its serving key."""
        return self.client.register_tool(self.session_id, self.owner, spec, key=self.serving_key)

    def unregister(self, timeout: float | None) -> int:
        """Remove every tool of this owner from the store (after :meth:`stop` too)."""
        return self.client.unregister_tools(
            self.session_id, self.owner, key=self.serving_key, timeout=timeout
        )

    def _answer(self, event: convert.ServeEvent) -> None:
        outcome = self._run(event.name, event.arguments_json)
        try:
            self._return(event.call_id, outcome)
        except LimitExceededError as exc:  # the result is too large: tell the caller so
            failure = failure_from_exception(ToolError(str(exc), error_type="LimitExceededError"))
            self._return(event.call_id, ("", failure))

    def _return(self, call_id: str, outcome: tuple[str, ToolFailure | None]) -> None:
        try:
            self.client.return_result(self.session_id, self.owner, call_id, outcome)
        except LimitExceededError:
            raise
        except DspexError as exc:  # the stream broke meanwhile: the caller was told already
            _log.info("result of tool call %s was not delivered: %s", call_id, exc)

    def stop(self) -> None:
        """Close the stream (the store stops routing calls here) and the call pool."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
