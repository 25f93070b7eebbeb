"""Layer 3 (tools): a function's tool description, and the checked call that runs it.

The JSON Schema of the parameters comes from ``dspy.Tool(function).args`` (DSPy's own inference
from type hints, pydantic included): one schema per parameter, wrapped into the object schema
of the arguments (``properties``, ``required``, ``additionalProperties``). :class:`ToolRunner`
is what the owning process runs per call: it checks the arguments object against that schema
(missing, unknown and wrongly typed arguments, all named at once) before the function runs,
converts each argument to its annotated type with pydantic, and calls the function.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import dspy
import jsonschema
import pydantic

from dspex.errors import ToolArgumentsError, ToolError

__all__ = ["ToolRunner", "ToolSignature", "describe"]

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ToolSignature(NamedTuple):
    """What the session stores about a tool: name, description and parameters schema."""

    name: str
    description: str
    parameters: dict[str, Any]


def _check_parameters(name: str, function: Callable[..., Any]) -> bool:
    """True if the function takes ``**kwargs``.

    Raises:
        ToolError: a parameter cannot be passed by name (``*args``, positional-only).
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise ToolError(
            f"tool {name!r}: cannot read the signature of {function!r} ({exc})", tool=name
        ) from None
    has_kwargs = False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            has_kwargs = True
        elif parameter.kind not in _KEYWORD_KINDS:
            raise ToolError(
                f"tool {name!r}: parameter {parameter.name!r} is {parameter.kind.description}; "
                "a tool is called with named arguments, so every parameter must be nameable",
                tool=name,
            )
    return has_kwargs


def describe(
    function: Callable[..., Any], name: str | None, description: str | None
) -> tuple[ToolSignature, ToolRunner]:
    """The tool signature of ``function`` and the runner that calls it with checked arguments.

    Raises:
        ToolError: the function cannot be a tool (a parameter cannot be passed by name, or
            its type hints cannot be turned into a JSON Schema).
    """
    label = str(name or getattr(function, "__name__", type(function).__name__))
    has_kwargs = _check_parameters(label, function)
    try:
        inferred = dspy.Tool(function, name=name, desc=description)
    except Exception as exc:  # pydantic cannot describe a hint, get_type_hints fails ...
        raise ToolError(
            f"tool {label!r}: its type hints cannot be described as JSON Schema "
            f"({type(exc).__name__}: {exc}); annotate parameters with JSON-compatible types "
            "(str, int, float, bool, list, dict, pydantic models)",
            tool=label,
        ) from exc
    signature = inspect.signature(function)
    keyword = {n for n, p in signature.parameters.items() if p.kind in _KEYWORD_KINDS}
    properties = {k: v for k, v in (inferred.args or {}).items() if k in keyword}
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": [k for k, v in properties.items() if "default" not in v],
    }
    if not has_kwargs:
        parameters["additionalProperties"] = False
    types = {k: v for k, v in (inferred.arg_types or {}).items() if k in properties}
    text = inspect.cleandoc(inferred.desc or "")
    tool_signature = ToolSignature(str(inferred.name), text, parameters)
    return tool_signature, ToolRunner(tool_signature, function, types, has_kwargs)


def _type_text(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    options = schema.get("anyOf")
    if isinstance(options, list):
        return " | ".join(_type_text(option) for option in options if isinstance(option, dict))
    return str(schema.get("title", "any"))


class ToolRunner:
    """Checks the arguments of one call, converts them to the annotated types, calls the tool.

    Args:
        signature: the tool's name, description and parameters schema.
        function: the function to call.
        types: annotated type per parameter (``Any`` ones are passed as they are).
        has_kwargs: the function takes ``**kwargs`` (extra arguments are then allowed).
    """

    def __init__(
        self,
        signature: ToolSignature,
        function: Callable[..., Any],
        types: Mapping[str, Any],
        has_kwargs: bool,
    ) -> None:
        self.name = signature.name
        self.function = function
        self.has_kwargs = has_kwargs
        properties: dict[str, Any] = signature.parameters["properties"]
        self._required = list(signature.parameters["required"])
        self._validators = {
            arg: jsonschema.validators.validator_for(schema)(schema)
            for arg, schema in properties.items()
        }
        self._adapters = {
            arg: pydantic.TypeAdapter(kind) for arg, kind in types.items() if kind is not Any
        }
        self._expected = ", ".join(
            f"{arg}: {_type_text(schema)}" + ("" if arg in self._required else " (optional)")
            for arg, schema in properties.items()
        )

    def problems(self, arguments: Mapping[str, Any]) -> list[str]:
        """What is wrong with ``arguments`` (empty when they fit the schema)."""
        if not isinstance(arguments, Mapping):
            return [
                f"the arguments must be a mapping of argument names to values, not "
                f"{type(arguments).__name__} {arguments!r:.60}"
            ]
        found = [
            f"missing required argument {arg!r}" for arg in self._required if arg not in arguments
        ]
        for arg, value in arguments.items():
            validator = self._validators.get(arg)
            if validator is None:
                if not self.has_kwargs:
                    found.append(f"unknown argument {arg!r}")
                continue
            plain = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
            found.extend(
                f"argument {arg!r}: {error.message}" for error in validator.iter_errors(plain)
            )
        return found

    def _refuse(self, problems: list[str]) -> ToolArgumentsError:
        expected = self._expected or "no arguments"
        return ToolArgumentsError(
            f"tool {self.name!r} called with wrong arguments: {'; '.join(problems)} "
            f"(it takes {expected}); the tool did not run",
            tool=self.name,
            problems=problems,
        )

    def _convert(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        converted = dict(arguments)
        for arg, adapter in self._adapters.items():
            if arg in converted:
                try:
                    converted[arg] = adapter.validate_python(converted[arg])
                except pydantic.ValidationError as exc:
                    details = "; ".join(str(e["msg"]) for e in exc.errors())
                    raise self._refuse([f"argument {arg!r}: {details}"]) from None
        return converted

    def __call__(self, arguments: Mapping[str, Any]) -> Any:
        """Run the tool with checked arguments; async functions run to completion here.

        Raises:
            ToolArgumentsError: the arguments do not fit (the function did not run).
            Exception: whatever the function raised.
        """
        problems = self.problems(arguments)
        if problems:
            raise self._refuse(problems)
        result = self.function(**self._convert(arguments))
        if inspect.isawaitable(result):
            return _run_awaitable(self.name, result)
        return result


def _run_awaitable(name: str, awaitable: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_wait(awaitable))
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()
    raise ToolError(
        f"tool {name!r} is async and was called from inside a running event loop; "
        "use `await tool.acall(...)` there",
        tool=name,
    )


async def _wait(awaitable: Any) -> Any:
    return await awaitable
