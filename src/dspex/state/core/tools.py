"""Core: a session's tools as one process sees them (the tables behind the session verbs).

:class:`SessionTools` holds the tools this process owns and runs, and routes every call:

* a tool this process owns runs here, directly (no server, no JSON), also after promotion;
* any other tool is called through the session store, whose ``ToolStore`` service sends the
  call to the owning process and returns its JSON result (or what it raised);
* an in-process session knows only its own tools; once it is promoted (or when it lives in a
  store from the start) its tools are registered in the store and served from a background
  stream, so every process of the session can list and call them.

Loaded without grpc: the way to the store (a :class:`ToolLink`, the client's
``ToolStoreClient``) is handed in by whoever connects the session to a store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from dspex.errors import DspexError, ToolError, ToolNotFoundError
from dspex.state.core.tool_model import (
    CallOutcome,
    ToolFailure,
    ToolHandler,
    ToolInfo,
    ToolSpecText,
    arguments_from_json,
    arguments_to_json,
    error_from_failure,
    failure_from_exception,
    new_owner_id,
    result_from_json,
    result_to_json,
)

__all__ = ["SessionTools", "ToolLink", "ToolServingHandle", "check_tool_name"]

_MAX_NAME_CHARS = 200
_CLOSE_TIMEOUT = 2.0
"""Seconds closing waits for the store to remove this process's tools (they are listed as
not connected anyway once the serving stream ends)."""


def check_tool_name(name: object) -> str:
    """Return ``name`` if it can name a tool.

    Raises:
        ToolError: not a non-empty string of at most 200 characters without whitespace.
    """
    if (
        not isinstance(name, str)
        or not name
        or len(name) > _MAX_NAME_CHARS
        or any(c.isspace() for c in name)
    ):
        raise ToolError(
            f"tool name {name!r} is not valid; use a non-empty name of at most "
            f"{_MAX_NAME_CHARS} characters without spaces, e.g. 'get_weather'"
        )
    return name


class ToolServingHandle(Protocol):
    """An owner's running serving stream (it answers the calls routed to this process).

    The store binds the owner id to this stream's connection (its serving key), so the owner's
    tools are registered and removed through the handle, never by owner id alone.
    """

    def register(self, spec: ToolSpecText) -> ToolInfo:
        """Register (or replace) one tool of the owner."""

    def unregister(self, timeout: float | None) -> int:
        """Remove every tool of the owner; return how many (also after :meth:`stop`)."""

    def stop(self) -> None:
        """End the stream and stop answering."""


class ToolLink(Protocol):
    """The way to a store's tool service, as :class:`SessionTools` uses it.

    :class:`dspex.state.client.tools.ToolStoreClient` is the one implementation; it is handed
    to :meth:`SessionTools.connect` so this module never imports the client (or grpc).
    """

    def list_tools(self, session_id: str) -> list[ToolInfo]:
        """Every tool of the session."""

    def call_tool(
        self, session_id: str, name: str, arguments_json: str, timeout: float | None
    ) -> CallOutcome:
        """Call a tool through the store and return what its owner answered."""

    def serve(
        self,
        session_id: str,
        owner: str,
        specs: Callable[[], list[ToolSpecText]],
        run: Callable[[str, str], tuple[str, ToolFailure | None]],
    ) -> ToolServingHandle:
        """Start serving ``owner``'s tools (registering each); return once calls can arrive."""

    def close(self) -> None:
        """Release the connection."""


def _spec(info: ToolInfo) -> ToolSpecText:
    return ToolSpecText(info.name, info.description, json.dumps(info.parameters))


class SessionTools:
    """The tools of one session in one process: those it owns, and the way to the others.

    Args:
        session_id: the session.
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.owner = new_owner_id()
        self._owned: dict[str, tuple[ToolInfo, ToolHandler]] = {}
        self._lock = threading.RLock()
        self._client: ToolLink | None = None
        self._serving: ToolServingHandle | None = None
        self.closed = False

    # -- reaching the store --------------------------------------------------------------

    def connect(self, link: ToolLink) -> None:
        """Use the session store behind ``link`` from now on; serve the owned tools there.

        A second call keeps the first link and closes ``link``.

        Raises:
            StoreError, SessionError, AccessError: the store refused to serve the tools.
        """
        with self._lock:
            if self._client is not None:
                link.close()
                return
            self._client = link
            if self._owned:
                try:
                    self._serve(link)
                except BaseException:
                    self._client = None
                    link.close()
                    raise

    def _serve(self, link: ToolLink) -> None:
        """Open the serving stream (it registers every owned tool before returning)."""
        self._serving = link.serve(self.session_id, self.owner, self._specs, self._run_json)

    def _specs(self) -> list[ToolSpecText]:
        # No lock: the serving thread calls this while `register` may hold it waiting for
        # the stream to start; copying the dict is atomic.
        return [_spec(info) for info, _handler in dict(self._owned).values()]

    # -- verbs ---------------------------------------------------------------------------

    def register(
        self, name: str, handler: ToolHandler, description: str, parameters: Mapping[str, Any]
    ) -> ToolInfo:
        """Own and run a tool; in a store, every process of the session can then call it.

        Registering a name this process owns again replaces it.

        Raises:
            ToolError: the name is not valid.
            ToolExistsError: another connected process owns the name.
            StoreError: the store could not be reached (nothing was registered).
        """
        info = ToolInfo(check_tool_name(name), description, dict(parameters), self.owner)
        with self._lock:
            previous = self._owned.get(name)
            self._owned[name] = (info, handler)
            try:
                if self._client is not None and self._serving is None:
                    self._serve(self._client)  # registers every owned tool, this one too
                elif self._serving is not None:
                    self._serving.register(_spec(info))
            except BaseException:
                if previous is None:
                    del self._owned[name]
                else:
                    self._owned[name] = previous
                raise
        return info

    def list(self) -> list[ToolInfo]:
        """Every tool of the session, sorted by name (in-process: this process's tools)."""
        client = self._client
        if client is not None:
            return client.list_tools(self.session_id)
        with self._lock:
            return [info for _name, (info, _h) in sorted(self._owned.items())]

    def call(self, name: str, arguments: Mapping[str, Any], timeout: float | None) -> Any:
        """Call a tool: here if this process owns it, else through the store.

        Raises:
            ToolNotFoundError: no such tool (the message lists the known ones).
            ToolArgumentsError: the arguments do not fit; the tool did not run.
            ToolError: the tool raised (``remote_traceback`` holds its traceback).
            ToolUnavailableError: its owner is not connected, or went away during the call.
            ToolTimeoutError: the owner did not answer within ``timeout`` seconds.
        """
        entry = self._owned.get(name)
        if entry is not None:
            return self._run(name, entry[1], arguments)
        client = self._client
        if client is None:
            with self._lock:
                known = list(self._owned)
            raise ToolNotFoundError.in_session(name, self.session_id, known)
        text = arguments_to_json(name, arguments)
        outcome = client.call_tool(self.session_id, name, text, timeout)
        if outcome.failure is not None:
            raise error_from_failure(outcome.failure, tool=name, owner=outcome.owner)
        return result_from_json(name, outcome.result_json)

    # -- running owned tools -------------------------------------------------------------

    def _run(self, name: str, handler: ToolHandler, arguments: Mapping[str, Any]) -> Any:
        """Run an owned tool here; what it raised becomes the same ToolError as remotely."""
        try:
            return handler(arguments)
        except ToolError:
            raise  # arguments refused (ToolArgumentsError), or a nested tool call failed
        except Exception as exc:
            raise error_from_failure(
                failure_from_exception(exc), tool=name, owner=self.owner
            ) from exc

    def _run_json(self, name: str, arguments_json: str) -> tuple[str, ToolFailure | None]:
        """Run an owned tool for a call that came through the store; never raises."""
        entry = self._owned.get(name)
        if entry is None:
            missing = ToolNotFoundError(
                f"tool {name!r} is no longer registered by owner {self.owner}", tool=name
            )
            return "", failure_from_exception(missing)
        try:
            value = entry[1](arguments_from_json(name, arguments_json))
            return result_to_json(name, value), None
        except Exception as exc:
            return "", failure_from_exception(exc)

    def close(self) -> None:
        """Stop serving and remove this process's tools from the store (best effort)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            serving, self._serving = self._serving, None
            client, self._client = self._client, None
        if serving is not None:
            serving.stop()
            try:
                serving.unregister(_CLOSE_TIMEOUT)
            except DspexError:
                pass  # the store or session is gone: nothing left to remove
        if client is not None:
            client.close()
