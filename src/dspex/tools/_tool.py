"""Layer 3 (tools): ``@dspex.tool`` and :class:`SessionTool`, a tool callable from any process.

``@dspex.tool`` registers a function in the current session: its name, its description (the
docstring) and the JSON Schema of its parameters (from the type hints, through ``dspy.Tool``).
The process that registers it owns it and runs every call. The decorator returns a
:class:`SessionTool`: calling it calls the tool through the current session, so the same
object, shipped to a ``dspex.Remote`` worker (or rebuilt there with :meth:`SessionTool.lookup`),
calls back into the owner. :meth:`SessionTool.as_dspy` gives the ``dspy.Tool`` for
``dspy.ReAct``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

import dspy

from dspex.errors import SessionError, ToolArgumentsError, ToolNotFoundError
from dspex.session import Session, current_session
from dspex.tools._schema import describe

__all__ = ["SessionTool", "tool"]

_F = TypeVar("_F", bound=Callable[..., Any])


class SessionTool:
    """A tool of a session: call it with keyword arguments, from any process of the session.

    The call goes through the *current* session: the owning process runs the function
    directly, any other process (a ``dspex.Remote`` worker, a process that joined the session
    by address) sends the arguments as JSON through the session store and gets the JSON result
    back. Pickling drops the function, so a copy in another process always calls the owner.

    Attributes:
        name: the tool's name in the session.
        description: what it does (the docstring unless given).
        parameters: JSON Schema of the arguments object.
        timeout: default seconds to wait for an owner in another process (None: no limit).
        function: the Python function, in the owning process (None elsewhere).
    """

    def __init__(
        self,
        name: str,
        description: str,
        parameters: Mapping[str, Any],
        *,
        timeout: float | None = None,
        function: Callable[..., Any] | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.parameters = dict(parameters)
        self.timeout = timeout
        self.function = function

    @classmethod
    def lookup(cls, name: str, *, session: Session | None = None) -> SessionTool:
        """The tool ``name`` as listed in the session (e.g. in a worker that did not define it).

        Raises:
            ToolNotFoundError: the session has no such tool (the message lists the known ones).
        """
        active = session if session is not None else current_session()
        listed = {info.name: info for info in active.list_tools()}
        info = listed.get(name)
        if info is None:
            raise ToolNotFoundError.in_session(name, active.session_id, listed)
        return cls(info.name, info.description, info.parameters)

    def __call__(self, *positional: Any, **arguments: Any) -> Any:
        """Call the tool in the current session and return its result.

        Raises:
            ToolArgumentsError: the arguments do not fit the parameters, or some were given by
                position (they travel as a JSON object of names); the tool did not run.
            ToolError: the tool raised (``err.remote_traceback`` has the owner's traceback).
            ToolNotFoundError, ToolUnavailableError, ToolTimeoutError: see
                :meth:`dspex.Session.call_tool`.
        """
        if positional:
            names = list(self.parameters.get("properties") or {})
            example = ", ".join(f"{name}=..." for name in names)
            raise ToolArgumentsError(
                f"tool {self.name!r} takes its arguments by name, got {len(positional)} by "
                f"position; call {self.name}({example})",
                tool=self.name,
                problems=["arguments given by position"],
            )
        return current_session().call_tool(self.name, arguments, timeout=self.timeout)

    async def acall(self, **arguments: Any) -> Any:
        """Async twin of calling the tool (runs the call in a thread; the session follows)."""
        return await asyncio.to_thread(self.__call__, **arguments)

    def as_dspy(self) -> dspy.Tool:
        """A ``dspy.Tool`` (same name, description and argument schema) that calls this tool
        through the session, for ``dspy.ReAct(signature, tools=[t.as_dspy()])``, also inside a
        ``dspex.Remote`` worker."""
        properties: dict[str, Any] = self.parameters.get("properties") or {}
        return dspy.Tool(
            _ToolStub(self.name, self.timeout),
            name=self.name,
            desc=self.description,
            args=properties,
            arg_types={arg: Any for arg in properties},
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The function stays with its owner: a copy elsewhere calls through the store.
        return (_rebuild, (self.name, self.description, self.parameters, self.timeout))

    def __repr__(self) -> str:
        where = "owned here" if self.function is not None else "remote"
        return f"SessionTool({self.name!r}, {where})"


def _rebuild(
    name: str, description: str, parameters: dict[str, Any], timeout: float | None
) -> SessionTool:
    return SessionTool(name, description, parameters, timeout=timeout)


class _ToolStub:
    """The function behind :meth:`SessionTool.as_dspy`: a session tool call (picklable)."""

    def __init__(self, name: str, timeout: float | None) -> None:
        self.name = name
        self.timeout = timeout

    def __call__(self, **arguments: Any) -> Any:
        return current_session().call_tool(self.name, arguments, timeout=self.timeout)


def _register(
    function: Callable[..., Any],
    name: str | None,
    description: str | None,
    timeout: float | None,
    session: Session | None,
) -> SessionTool:
    signature, runner = describe(function, name, description)
    if session is None:
        try:
            session = current_session()
        except SessionError:
            raise SessionError(
                f"@dspex.tool registers {signature.name!r} in the current session, and none is "
                "active; decorate the function inside `with dspex.Session(): ...`, or pass "
                "session=..."
            ) from None
    session.register_tool(
        signature.name,
        runner,
        description=signature.description,
        parameters=signature.parameters,
    )
    return SessionTool(
        signature.name,
        signature.description,
        signature.parameters,
        timeout=timeout,
        function=function,
    )


@overload
def tool(function: _F, /) -> SessionTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    session: Session | None = None,
) -> Callable[[Callable[..., Any]], SessionTool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    session: Session | None = None,
) -> SessionTool | Callable[[Callable[..., Any]], SessionTool]:
    """Register a function as a tool of the session; this process owns it and runs its calls.

    The name defaults to the function's name, the description to its docstring, and the
    parameters' JSON Schema comes from its type hints. Every process of the session can list
    the tool (``session.list_tools()``) and call it; arguments and results cross processes as
    JSON. Use as ``@dspex.tool`` or ``@dspex.tool(name=..., description=..., timeout=...)``.

    Args:
        function: the function (when used without parentheses).
        name: the tool's name (default: the function's name).
        description: what it does (default: the docstring).
        timeout: default seconds a caller in another process waits for the result.
        session: the session to register in (default: the current one).

    Raises:
        SessionError: no session is given or active.
        ToolError: a parameter cannot be passed by name, the type hints cannot be described
            as JSON Schema, or the name is not valid.
        ToolExistsError: another connected process owns a tool of that name.

    Examples:
        >>> with dspex.Session() as session:  # doctest: +SKIP
        ...     @dspex.tool
        ...     def weather(city: str) -> str:
        ...         "Today's weather in a city."
        ...         return f"sunny in {city}"
        ...     weather(city="Paris")
        'sunny in Paris'
    """
    if function is not None:
        return _register(function, name, description, timeout, session)

    def decorate(target: Callable[..., Any]) -> SessionTool:
        return _register(target, name, description, timeout, session)

    return decorate
