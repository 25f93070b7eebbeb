"""Server side: the store's routing table for tool calls (which owner runs what).

For each session the hub keeps the registered tools (name -> spec and owner id) and the open
``ServeTools`` stream of each owner. ``CallTool`` becomes a :class:`PendingCall` queued on the
owner's stream; the owner's ``ReturnToolResult`` completes it. When an owner's stream ends, every
call still waiting on it fails at once with :class:`~dspex.errors.ToolUnavailableError`, and new
calls to its tools fail the same way until it serves again. Its tools stay listed (as not
connected), so the error can name the tool and its owner.

Ownership is bound to the authenticated principal: the first principal that registers or
serves an owner id in a session holds it, and no other principal may register, serve, answer or
unregister for that owner id, nor take over a tool name another principal registered, even
while that owner is disconnected.

Ownership is also bound to the connection: an owner id's first ``ServeTools`` stream is given a
secret *serving key* (sent only on that stream), and from then on only requests carrying it may
serve (reconnect), register or unregister for that owner id. So a second connection of the same
principal, which can read owner ids from ``ListTools``, cannot take over, reshape or remove a
served owner's tools, nor receive its calls; it may take a tool *name* over only once the
owner's stream has ended (see :meth:`ToolHub.register`). Answers need no key: a call's id is
itself a secret sent only on the stream that received the call.

The hub is confined to the server's event loop: every method runs there, so it needs no lock.
The table lives in this server's memory: a restarted store learns the tools again when their
owners reconnect and register them anew.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets

from dspex.errors import (
    PermissionDeniedError,
    ToolError,
    ToolExistsError,
    ToolNotFoundError,
    ToolUnavailableError,
)
from dspex.state.wire.tools import Outcome, ToolSpecText

__all__ = ["OwnerStream", "PendingCall", "ToolHub"]


class PendingCall:
    """One call routed to an owner, waiting for its outcome."""

    __slots__ = ("arguments_json", "call_id", "future", "name", "session_id", "stream")

    def __init__(self, session_id: str, name: str, arguments_json: str, stream: OwnerStream):
        self.call_id = secrets.token_hex(12)
        self.session_id = session_id
        self.name = name
        self.arguments_json = arguments_json
        self.stream = stream
        self.future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    def finish(self, outcome: Outcome | ToolError) -> bool:
        """Complete the call (False if it already ended: timed out or its caller left)."""
        if self.future.done():
            return False
        if isinstance(outcome, ToolError):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
        return True


class OwnerStream:
    """One open ``ServeTools`` stream: the queue of calls to send and the calls sent on it."""

    def __init__(self, session_id: str, owner: str, key: str) -> None:
        self.session_id = session_id
        self.owner = owner
        self.key = key
        self.queue: asyncio.Queue[PendingCall | None] = asyncio.Queue()
        self.calls: dict[str, PendingCall] = {}

    def end(self) -> None:
        """Ask the stream's sender to finish (it was replaced, or the server stops)."""
        self.queue.put_nowait(None)


class ToolHub:
    """Registered tools and open owner streams of every session this server serves."""

    def __init__(self) -> None:
        self._tools: dict[str, dict[str, tuple[ToolSpecText, str]]] = {}
        self._streams: dict[tuple[str, str], OwnerStream] = {}
        self._calls: dict[str, PendingCall] = {}
        self._principals: dict[tuple[str, str], str] = {}  # (session, owner id) -> principal
        self._keys: dict[tuple[str, str], str] = {}  # (session, owner id) -> serving key

    # -- ownership -----------------------------------------------------------------------

    def claim(self, session_id: str, owner: str, principal: str) -> None:
        """Bind ``owner`` (in the session) to ``principal``, or check that it is bound to it.

        Raises:
            PermissionDeniedError: another principal holds this owner id.
        """
        held = self._principals.setdefault((session_id, owner), principal)
        if held != principal:
            raise PermissionDeniedError(
                f"tool owner {owner} in session {session_id!r} belongs to another principal; "
                "only that principal may register, serve or answer for it (use your own owner "
                "id: each process gets one)",
                principal=principal,
                owner=owner,
            )

    def authorize(self, session_id: str, owner: str, principal: str, key: str) -> None:
        """Check that a request may act for ``owner``: its principal holds the owner id
        (:meth:`claim`) and, once the owner id has served, ``key`` is its serving key.

        Raises:
            PermissionDeniedError: another principal holds the owner id, or the owner id is
                bound to another connection's ServeTools stream.
        """
        self.claim(session_id, owner, principal)
        held = self._keys.get((session_id, owner))
        if held is not None and not hmac.compare_digest(held.encode(), key.encode()):
            state = "live" if self.connected(session_id, owner) else "ended"
            raise PermissionDeniedError(
                f"tool owner {owner} in session {session_id!r} is bound to the ServeTools "
                f"stream that first served it (now {state}); only that connection, which holds "
                "the owner's serving key, may serve, register or unregister for it. Serve your "
                "own owner id (each process gets one); a tool name of an owner whose stream "
                "has ended can be registered again by any owner of the same principal",
                principal=principal,
                owner=owner,
            )

    def principal_of(self, session_id: str, owner: str) -> str | None:
        """The principal holding ``owner`` in the session, if any."""
        return self._principals.get((session_id, owner))

    # -- registration --------------------------------------------------------------------

    def connected(self, session_id: str, owner: str) -> bool:
        """True while ``owner`` keeps a ServeTools stream open in the session."""
        return (session_id, owner) in self._streams

    def register(self, session_id: str, owner: str, spec: ToolSpecText) -> bool:
        """Register or replace a tool; returns whether its owner is connected.

        Raises:
            ToolExistsError: another owner, still connected, registered this name.
        """
        tools = self._tools.setdefault(session_id, {})
        existing = tools.get(spec.name)
        if existing is not None and self.principal_of(
            session_id, existing[1]
        ) != self.principal_of(session_id, owner):
            raise ToolExistsError(
                f"tool {spec.name!r} is already registered in session {session_id!r} by "
                "another principal; give this tool another name (@dspex.tool(name=...))",
                tool=spec.name,
                owner=existing[1],
            )
        if (
            existing is not None
            and existing[1] != owner
            and self.connected(session_id, existing[1])
        ):
            raise ToolExistsError(
                f"tool {spec.name!r} is already registered in session {session_id!r} by "
                f"owner {existing[1]}, which is still connected; give this tool another name "
                "(@dspex.tool(name=...))",
                tool=spec.name,
                owner=existing[1],
            )
        tools[spec.name] = (spec, owner)
        return self.connected(session_id, owner)

    def unregister(self, session_id: str, owner: str, names: list[str]) -> int:
        """Remove tools of ``owner`` (all of them when ``names`` is empty); returns how many."""
        tools = self._tools.get(session_id, {})
        doomed = [
            name
            for name, (_spec, by) in tools.items()
            if by == owner and (not names or name in names)
        ]
        for name in doomed:
            del tools[name]
        return len(doomed)

    def listing(self, session_id: str) -> list[tuple[ToolSpecText, str, bool]]:
        """Every tool of the session, sorted by name: (spec, owner, connected)."""
        tools = self._tools.get(session_id, {})
        return [
            (spec, owner, self.connected(session_id, owner))
            for _name, (spec, owner) in sorted(tools.items())
        ]

    def entry(self, session_id: str, name: str) -> tuple[ToolSpecText, str] | None:
        """The registered tool ``name``: (spec, owner), or None."""
        return self._tools.get(session_id, {}).get(name)

    def drop_session(self, session_id: str) -> None:
        """Forget a session that was closed or expired: its tools, streams and calls."""
        self._tools.pop(session_id, None)
        for table in (self._principals, self._keys):
            for key in [key for key in table if key[0] == session_id]:
                del table[key]
        for key in [key for key in self._streams if key[0] == session_id]:
            self._streams.pop(key).end()

    # -- owner streams -------------------------------------------------------------------

    def open_stream(self, session_id: str, owner: str) -> OwnerStream:
        """Start serving ``owner``'s tools; an older stream of the same owner is ended.

        Call :meth:`authorize` first: only the holder of the owner's serving key gets here for
        an owner id that served before (its own reconnect, which may come before this server
        noticed the old stream's end). The stream carries the key: the one on record, or a new
        one for the owner id's first stream.
        """
        key = self._keys.setdefault((session_id, owner), secrets.token_urlsafe(24))
        stream = OwnerStream(session_id, owner, key)
        previous = self._streams.get((session_id, owner))
        if previous is not None:
            previous.end()
        self._streams[(session_id, owner)] = stream
        return stream

    def close_stream(self, stream: OwnerStream) -> None:
        """The stream ended: calls waiting on it fail now (the owner is gone or reconnecting)."""
        key = (stream.session_id, stream.owner)
        if self._streams.get(key) is stream:
            del self._streams[key]
        while not stream.queue.empty():
            stream.queue.get_nowait()
        for call in list(stream.calls.values()):
            call.finish(
                ToolUnavailableError(
                    f"tool {call.name!r}: its owner {stream.owner} went away while the call "
                    "was waiting or running (the owner process ended or lost its connection "
                    "to the store); the call may or may not have taken effect",
                    tool=call.name,
                    owner=stream.owner,
                )
            )
            self.forget(call)

    def end_all(self) -> None:
        """End every owner stream (the server is stopping)."""
        for stream in list(self._streams.values()):
            stream.end()

    # -- calls ---------------------------------------------------------------------------

    def submit(self, session_id: str, name: str, arguments_json: str) -> PendingCall:
        """Queue a call on the owner's stream.

        Raises:
            ToolNotFoundError: no such tool (the message lists the session's tools).
            ToolUnavailableError: the tool's owner is not connected.
        """
        tools = self._tools.get(session_id, {})
        entry = tools.get(name)
        if entry is None:
            raise ToolNotFoundError.in_session(name, session_id, tools)
        owner = entry[1]
        stream = self._streams.get((session_id, owner))
        if stream is None:
            raise ToolUnavailableError(
                f"tool {name!r} cannot run: its owner {owner} is not connected (the owner "
                "process ended or lost its connection to the store); start the owner again, "
                "or register the tool in a running process",
                tool=name,
                owner=owner,
            )
        call = PendingCall(session_id, name, arguments_json, stream)
        stream.calls[call.call_id] = call
        self._calls[call.call_id] = call
        stream.queue.put_nowait(call)
        return call

    def complete(self, session_id: str, owner: str, call_id: str, outcome: Outcome) -> bool:
        """Deliver the owner's outcome; False when nobody waits for the call any more."""
        call = self._calls.get(call_id)
        if call is None or call.session_id != session_id or call.stream.owner != owner:
            return False
        self.forget(call)
        return call.finish(outcome)

    def call_name(self, call_id: str) -> str:
        """The tool name of a waiting call ("?" when it is not waiting)."""
        call = self._calls.get(call_id)
        return "?" if call is None else call.name

    def forget(self, call: PendingCall) -> None:
        """Stop tracking a call (finished, timed out, or its caller left)."""
        self._calls.pop(call.call_id, None)
        call.stream.calls.pop(call.call_id, None)
