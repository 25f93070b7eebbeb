"""Core: what a session's tools are, and how a tool's outcome crosses processes.

A tool's arguments and result travel as JSON text; what a tool raised travels as a
:class:`ToolFailure` (error code, exception type name, message, traceback text) and is raised
on the caller's side as the :class:`~dspex.errors.ToolError` class named by the code. The same
conversions serve a call made in-process, so a tool fails the same way wherever it is called.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import traceback
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from dspex.errors import ToolArgumentsError, ToolError, error_class_for_code

__all__ = [
    "ToolFailure",
    "ToolHandler",
    "ToolInfo",
    "arguments_from_json",
    "arguments_to_json",
    "error_from_failure",
    "failure_from_exception",
    "new_owner_id",
    "result_from_json",
    "result_to_json",
]

ToolHandler = Callable[[Mapping[str, Any]], Any]
"""Runs one tool in its owning process: validates the arguments object, then calls the
function. Raises :class:`~dspex.errors.ToolArgumentsError` for arguments that do not fit."""


class ToolInfo(NamedTuple):
    """One tool of a session, as every process of the session sees it.

    Attributes:
        name: unique within the session.
        description: what the tool does (the function's docstring unless given).
        parameters: JSON Schema of the arguments object (``type``, ``properties``,
            ``required``).
        owner: the id (``host:pid:random``) of the process that runs the tool.
        connected: True while the owner is reachable (always True in-process).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    owner: str
    connected: bool = True


class ToolFailure(NamedTuple):
    """What a tool raised, in a form that crosses processes.

    Attributes:
        code: the stable code of the :class:`~dspex.errors.ToolError` class to raise.
        type: the exception's class name (``"ValueError"``).
        message: the exception's message.
        traceback: the formatted traceback in the owner ("" when there is none).
    """

    code: str
    type: str
    message: str
    traceback: str


def new_owner_id() -> str:
    """A fresh owner id naming this process: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def failure_from_exception(exc: BaseException) -> ToolFailure:
    """Describe what a tool raised (arguments refused before it ran carry no traceback)."""
    if isinstance(exc, ToolError):
        text = exc.details.get("remote_traceback", "")
        kind = exc.details.get("error_type", type(exc).__name__)
        return ToolFailure(exc.code, str(kind), exc.message, str(text))
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ToolFailure(ToolError.code, type(exc).__name__, str(exc), text)


def error_from_failure(failure: ToolFailure, *, tool: str, owner: str) -> ToolError:
    """The :class:`~dspex.errors.ToolError` (subclass) to raise for ``failure``."""
    cls = error_class_for_code(failure.code)
    if cls is None or not issubclass(cls, ToolError):
        cls = ToolError
    details = {"tool": tool, "owner": owner, "error_type": failure.type}
    if failure.traceback:
        details["remote_traceback"] = failure.traceback
    if cls is not ToolError:
        return cls(failure.message, **details)
    message = (
        f"tool {tool!r} raised {failure.type}: {failure.message} (in owner {owner}; its "
        "traceback is in err.remote_traceback)"
    )
    return ToolError(message, **details)


def _plain(value: Any) -> Any:
    """``json.dumps`` fallback: pydantic models, dataclasses, sets and tuples become JSON."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def arguments_to_json(tool: str, arguments: Mapping[str, Any]) -> str:
    """The arguments object as JSON text.

    Raises:
        ToolArgumentsError: an argument cannot travel as JSON.
    """
    try:
        return json.dumps(dict(arguments), default=_plain, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ToolArgumentsError(
            f"tool {tool!r}: the arguments cannot be sent as JSON ({exc}); pass strings, "
            "numbers, booleans, lists, dicts or pydantic models",
            tool=tool,
        ) from None


def arguments_from_json(tool: str, text: str) -> dict[str, Any]:
    """Parse an arguments object.

    Raises:
        ToolArgumentsError: the text is not a JSON object.
    """
    try:
        value = json.loads(text) if text else {}
    except ValueError as exc:
        raise ToolArgumentsError(
            f"tool {tool!r}: the arguments are not valid JSON ({exc})", tool=tool
        ) from None
    if not isinstance(value, dict):
        raise ToolArgumentsError(
            f"tool {tool!r}: the arguments must be a JSON object of name -> value, "
            f"not {type(value).__name__}",
            tool=tool,
        )
    return value


def result_to_json(tool: str, value: Any) -> str:
    """The tool's return value as JSON text.

    Raises:
        ToolError: the value cannot travel as JSON (the message says what to return instead).
    """
    try:
        return json.dumps(value, default=_plain, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ToolError(
            f"tool {tool!r} returned a value that cannot be sent as JSON ({exc}); return "
            "strings, numbers, booleans, None, lists, dicts or pydantic models",
            tool=tool,
            error_type="TypeError",
        ) from None


def result_from_json(tool: str, text: str) -> Any:
    """Parse a tool's JSON result.

    Raises:
        ToolError: the owner sent text that is not JSON.
    """
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ToolError(
            f"tool {tool!r}: its owner sent a result that is not JSON ({exc})"
        ) from None


class ToolSpecText(NamedTuple):
    """A tool as its owner declares it, parameters still JSON text (the store keeps it so)."""

    name: str
    description: str
    parameters_json: str


class CallOutcome(NamedTuple):
    """What ``CallTool`` answered: the result JSON or the failure, and who ran the call."""

    result_json: str
    failure: ToolFailure | None
    owner: str
