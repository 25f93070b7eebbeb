"""Layer 2, gRPC adapter: the store checks every tool call's arguments against the tool's schema.

An owner written in Python checks arguments itself before its function runs; an owner written in
another language may not. So the store checks ``arguments_json`` against the tool's
``parameters_json`` (JSON Schema) for every caller and every owner, and answers a call whose
arguments do not fit with a ``tool_arguments`` failure, naming every problem, without routing it.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final

import jsonschema

from dspex.state.core.tool_model import ToolFailure

__all__ = ["arguments_failure"]

_MAX_PROBLEMS: Final = 20


@functools.lru_cache(maxsize=256)
def _validator(parameters_json: str) -> Any:
    """A validator for one schema text (None when the schema itself is unusable: the owner
    declared it, so the owner's own check decides)."""
    try:
        schema = json.loads(parameters_json) if parameters_json else {}
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except (ValueError, jsonschema.SchemaError):
        return None
    return cls(schema)


def _problems(validator: Any, arguments: Any) -> list[str]:
    """Every problem, worded as the owners' own check words them (missing, unknown, per
    argument), so a caller sees the same message whoever refuses the call."""
    schema = validator.schema
    if not isinstance(arguments, dict) or not isinstance(schema, dict):
        return [f"arguments: {e.message}" for e in validator.iter_errors(arguments)]
    found = [f"missing required argument {arg!r}" for arg in schema.get("required", ())
             if arg not in arguments]  # fmt: skip
    known = schema.get("properties", {})
    closed = schema.get("additionalProperties") is False
    by_argument: dict[str, list[str]] = {}
    for error in validator.iter_errors(arguments):
        path = list(error.absolute_path)
        if path:
            by_argument.setdefault(str(path[0]), []).append(error.message)
        elif error.validator not in ("required", "additionalProperties"):
            found.append(f"arguments: {error.message}")
    for arg in arguments:
        if closed and arg not in known:
            found.append(f"unknown argument {arg!r}")
        found.extend(f"argument {arg!r}: {message}" for message in by_argument.get(arg, ()))
    return found


def arguments_failure(tool: str, parameters_json: str, arguments_json: str) -> ToolFailure | None:
    """The ``tool_arguments`` failure for arguments that do not fit (None when they fit)."""
    try:
        arguments = json.loads(arguments_json) if arguments_json else {}
    except ValueError as exc:
        problems = [f"arguments_json is not valid JSON ({exc})"]
    else:
        validator = _validator(parameters_json)
        if validator is None:
            return None
        problems = _problems(validator, arguments)[:_MAX_PROBLEMS]
    if not problems:
        return None
    message = (
        f"tool {tool!r} called with wrong arguments: {'; '.join(problems)} (its parameters_json "
        "says what it takes); the tool did not run"
    )
    return ToolFailure("tool_arguments", "ToolArgumentsError", message, "")
