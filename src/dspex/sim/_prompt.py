"""Layer 3 (simulation): read a DSPy-adapter prompt and write a reply the adapter can parse.

The simulation LM sees only what a real LM sees: a system text and messages. DSPy's Chat, JSON
and XML adapters all describe the signature in the system text ("Your output fields are: 1.
`answer` (int): ..." and "your objective is: <instructions>"), so the fields, their types and the
instructions are read from there, and the reply is written in the format the last user message
asks for. Anything that does not look like an adapter prompt is answered as plain text.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ParsedPrompt", "format_reply", "parse_prompt", "value_for_type"]

_FIELD_LINE = re.compile(r"^\d+\. `(?P<name>[^`]+)` \((?P<type>.*)\):", re.MULTILINE)
_OBJECTIVE = re.compile(r"your objective is:\s*(?P<text>.*)\Z", re.DOTALL)
_CHAT_MARKER = re.compile(r"\[\[ ## (?P<name>\w+) ## \]\]\n")
_XML_FIELD = re.compile(r"<(?P<name>\w+)>\n?(?P<value>.*?)\n?</(?P=name)>", re.DOTALL)
_REPLY_PROMPT = ("\n\nRespond with", "\n\nRespond using")


@dataclass(frozen=True)
class ParsedPrompt:
    """What the simulation reads from one request.

    Attributes:
        instructions: the signature instructions ("" when absent).
        inputs: input field name -> value text, from the last user message.
        outputs: output fields as (name, type text) pairs, in order.
        style: ``"chat"``, ``"json"``, ``"xml"`` or ``"text"`` (not an adapter prompt).
        demos: how many demonstrations (earlier assistant turns) the prompt holds.
        text: the last user message.
    """

    instructions: str
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: tuple[tuple[str, str], ...] = ()
    style: str = "text"
    demos: int = 0
    text: str = ""

    @property
    def question(self) -> str:
        """The first input value (or the whole last message when there are no fields)."""
        return next(iter(self.inputs.values()), self.text).strip()


def parse_prompt(system: str, messages: list[tuple[str, str]]) -> ParsedPrompt:
    """Parse a system text and (role, text) messages into a :class:`ParsedPrompt`."""
    users = [text for role, text in messages if role == "user"]
    last = users[-1] if users else ""
    demos = sum(1 for role, _ in messages[:-1] if role == "assistant")
    objective = _OBJECTIVE.search(system)
    instructions = " ".join(objective.group("text").split()) if objective else ""
    inputs_part, _, outputs_part = system.partition("Your output fields are:")
    outputs_part = outputs_part.split("All interactions will be structured", 1)[0]
    outputs = tuple((m["name"], m["type"].strip()) for m in _FIELD_LINE.finditer(outputs_part))
    input_names = [m["name"] for m in _FIELD_LINE.finditer(inputs_part)]
    if not outputs:
        return ParsedPrompt(instructions, {}, (), "text", demos, last)
    style = _style(last)
    inputs = _read_inputs(last, input_names, style)
    return ParsedPrompt(instructions, inputs, outputs, style, demos, last)


def _style(last: str) -> str:
    if "Respond with a JSON object" in last:
        return "json"
    if "wrapped in XML tags" in last:
        return "xml"
    return "chat"


def _read_inputs(text: str, names: list[str], style: str) -> dict[str, str]:
    for marker in _REPLY_PROMPT:
        text = text.split(marker, 1)[0]
    found: dict[str, str] = {}
    if style == "xml":
        for match in _XML_FIELD.finditer(text):
            found[match["name"]] = match["value"]
    else:
        parts = _CHAT_MARKER.split(text)
        found = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    ordered = {name: found[name] for name in names if name in found}
    return ordered or found


def value_for_type(type_text: str, answer: str | None, fallback: str) -> Any:
    """Return a Python value of the field type ``type_text`` (as DSPy renders it).

    ``answer`` is the intended answer text (None when the simulation has none); ``fallback`` is
    a deterministic filler used otherwise.
    """
    base = type_text.replace("typing.", "").strip()
    if base.startswith("Optional[") or base.endswith("| None"):
        base = base.removeprefix("Optional[").removesuffix("]").removesuffix("| None").strip()
    text = answer if answer is not None else fallback
    if base.startswith("Literal["):
        return _literal(base, answer, fallback)
    filler = sum(map(ord, fallback)) % 10
    if base == "int":
        return _number(answer, int, filler)
    if base == "float":
        return _number(answer, float, filler / 10)
    if base == "bool":
        return answer is None or answer.strip().lower() in ("true", "yes", "1", "positive")
    if base.startswith(("list", "List", "tuple", "set")):
        return [text] if "str" in base else []
    if base.startswith(("dict", "Dict")):
        return {}
    return text


def _literal(base: str, answer: str | None, fallback: str) -> Any:
    try:
        options = ast.literal_eval("(" + base[len("Literal[") : -1] + ",)")
    except (SyntaxError, ValueError):
        return answer if answer is not None else fallback
    if answer is not None and answer in options:
        return answer
    if "finish" in options:  # ReAct's tool choice: end the trajectory
        return "finish"
    return options[sum(map(ord, fallback)) % len(options)]


def _number(text: str | None, kind: type[int] | type[float], default: float) -> int | float:
    match = re.search(r"-?\d+(?:\.\d+)?", text) if text is not None else None
    if match is None:
        return kind(default)
    return kind(float(match.group()))


def format_reply(style: str, values: dict[str, Any]) -> str:
    """Write ``values`` (output field name -> Python value) in the adapter's reply format."""
    if style == "json":
        return json.dumps(values)
    if style == "xml":
        return "\n\n".join(
            f"<{name}>{_xml_text(value)}</{name}>" for name, value in values.items()
        )
    if style == "text":
        return "\n".join(_text(value) for value in values.values())
    body = "\n\n".join(f"[[ ## {name} ## ]]\n{_text(value)}" for name, value in values.items())
    return body + "\n\n[[ ## completed ## ]]"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _xml_text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(f"<item>{_text(item)}</item>" for item in value)
    if isinstance(value, dict):
        return "".join(f"<{key}>{_text(item)}</{key}>" for key, item in value.items())
    return "\n" + _text(value) + "\n"
